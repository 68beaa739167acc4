//! The install layout: `scripts/install` into a temporary `DESTDIR`, the
//! tree it lays out, the files in it agreeing with each other (unit, D-Bus
//! policy and activation, polkit actions, sysusers, tmpfiles, p11-kit),
//! the default configuration accepted by the daemon, and systemd's own
//! checks of the installed unit (`systemd-analyze verify` and `security`).

use phonecsp_tests::{bin, pkcs11_module};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The overall exposure `systemd-analyze security` gives the unit now; a
/// change that loosens the sandbox fails here.
const SECURITY_EXPOSURE: f64 = 1.2;

/// The same for the handset's user unit. The offline analysis scores a user
/// unit as if root ran it (capabilities, `User=`), which a user manager
/// never does; what is left to a user unit is all set.
const USER_SECURITY_EXPOSURE: f64 = 3.1;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// What `scripts/install --from` takes, the programs and the module as a
/// build leaves them, with where each is installed (`{triplet}`: the
/// multiarch directory) and its mode.
const BUILT: [(&str, &str, u32); 5] = [
    ("phonecspd", "usr/bin/phonecspd", 0o755),
    ("phonecsp", "usr/bin/phonecsp", 0o755),
    ("phonecsp-handset", "usr/bin/phonecsp-handset", 0o755),
    (
        "phonecsp-keyscript",
        "usr/lib/phonecsp/phonecsp-keyscript",
        0o755,
    ),
    (
        "libphonecsp_pkcs11.so",
        "usr/lib/{triplet}/pkcs11/libphonecsp_pkcs11.so",
        0o644,
    ),
];

/// The module is linked in from where the tests find it
/// ([`pkcs11_module`]), which is not always beside the programs.
fn built(name: &str) -> PathBuf {
    if name == "libphonecsp_pkcs11.so" {
        pkcs11_module()
    } else {
        bin(name)
    }
}

fn install(destdir: &Path) -> Output {
    let from = tempfile::tempdir().unwrap();
    for (name, _, _) in BUILT {
        std::os::unix::fs::symlink(built(name), from.path().join(name)).unwrap();
    }
    let out = Command::new(repo().join("scripts/install"))
        .arg("--from")
        .arg(from.path())
        .env("DESTDIR", destdir)
        .env_remove("PREFIX")
        .env_remove("SYSCONFDIR")
        .output()
        .expect("run scripts/install");
    assert!(
        out.status.success(),
        "scripts/install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn multiarch() -> String {
    let out = Command::new("gcc").arg("-print-multiarch").output();
    match out {
        Ok(o) if o.status.success() && !o.stdout.trim_ascii().is_empty() => {
            String::from_utf8(o.stdout).unwrap().trim().to_owned()
        }
        _ => format!("{}-linux-gnu", std::env::consts::ARCH),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The value of `key=` in an ini-style file (unit, D-Bus service file).
fn ini_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
}

/// What the installation lays out besides the built programs and module,
/// with each file's mode.
const INSTALLED: &[(&str, u32)] = &[
    ("usr/share/p11-kit/modules/phonecsp.module", 0o644),
    ("usr/lib/systemd/system/phonecspd.service", 0o644),
    ("usr/lib/systemd/user/phonecsp-handset.service", 0o644),
    ("usr/lib/sysusers.d/phonecsp.conf", 0o644),
    ("usr/lib/tmpfiles.d/phonecsp.conf", 0o644),
    (
        "usr/share/dbus-1/system.d/org.phonecsp.CryptoProvider1.conf",
        0o644,
    ),
    (
        "usr/share/dbus-1/system-services/org.phonecsp.CryptoProvider1.service",
        0o644,
    ),
    (
        "usr/share/dbus-1/interfaces/org.phonecsp.CryptoProvider1.xml",
        0o644,
    ),
    ("usr/share/dbus-1/interfaces/org.phonecsp.Key1.xml", 0o644),
    ("usr/share/dbus-1/interfaces/org.phonecsp.Agent1.xml", 0o644),
    ("usr/share/polkit-1/actions/org.phonecsp.policy", 0o644),
    ("usr/share/initramfs-tools/hooks/phonecsp", 0o755),
    (
        "usr/share/initramfs-tools/scripts/init-premount/phonecsp",
        0o755,
    ),
    (
        "usr/share/initramfs-tools/scripts/init-bottom/phonecsp",
        0o755,
    ),
    ("usr/share/initramfs-tools/conf-hooks.d/phonecsp", 0o644),
    ("usr/share/doc/phonecsp/README.md", 0o644),
    ("etc/phonecsp/phonecspd.toml", 0o644),
    ("usr/share/bash-completion/completions/phonecsp", 0o644),
    ("usr/share/zsh/vendor-completions/_phonecsp", 0o644),
    ("usr/share/fish/vendor_completions.d/phonecsp.fish", 0o644),
    ("usr/share/man/man1/phonecsp.1", 0o644),
    ("usr/share/man/man1/phonecsp-sign.1", 0o644),
    ("usr/share/man/man1/phonecsp-luks-enroll.1", 0o644),
];

#[test]
fn install_lays_out_the_whole_tree() {
    let dest = tempfile::tempdir().unwrap();
    let root = dest.path();
    install(root);
    let triplet = multiarch();
    let installed = |path: &str| path.replace("{triplet}", &triplet);
    let mut expected: Vec<(String, u32)> = BUILT
        .iter()
        .map(|(_, path, mode)| (installed(path), *mode))
        .collect();
    expected.extend(
        INSTALLED
            .iter()
            .map(|(path, mode)| (path.to_string(), *mode)),
    );
    for (path, m) in &expected {
        let p = root.join(path);
        assert!(p.is_file(), "{path} is not installed");
        assert_eq!(mode(&p), *m, "{path}: mode {:o}", mode(&p));
    }

    // The programs and the module are the ones just built.
    for (name, path, _) in BUILT {
        let path = installed(path);
        assert!(
            std::fs::read(built(name)).unwrap() == std::fs::read(root.join(&path)).unwrap(),
            "{path} differs from the built {name}"
        );
    }

    // The files agree with each other.
    let unit = read(&root.join("usr/lib/systemd/system/phonecspd.service"));
    let activation =
        read(&root.join("usr/share/dbus-1/system-services/org.phonecsp.CryptoProvider1.service"));
    let policy = read(&root.join("usr/share/dbus-1/system.d/org.phonecsp.CryptoProvider1.conf"));
    let sysusers = read(&root.join("usr/lib/sysusers.d/phonecsp.conf"));
    let tmpfiles = read(&root.join("usr/lib/tmpfiles.d/phonecsp.conf"));
    let exec = ini_value(&unit, "ExecStart").expect("ExecStart");
    assert_eq!(
        ini_value(&activation, "Exec").as_deref(),
        Some(exec.as_str())
    );
    let program = exec.split_whitespace().next().unwrap();
    assert!(
        root.join(program.trim_start_matches('/')).is_file(),
        "{program}"
    );
    assert_eq!(
        ini_value(&activation, "SystemdService").as_deref(),
        Some("phonecspd.service")
    );
    let bus_name = ini_value(&unit, "BusName").expect("BusName");
    assert_eq!(
        ini_value(&activation, "Name").as_deref(),
        Some(bus_name.as_str())
    );
    assert!(policy.contains(&format!("<allow own=\"{bus_name}\"/>")));
    let user = ini_value(&unit, "User").expect("User");
    assert_eq!(
        ini_value(&activation, "User").as_deref(),
        Some(user.as_str())
    );
    assert!(policy.contains(&format!("<policy user=\"{user}\">")));
    let sysuser = sysusers
        .lines()
        .find(|l| l.starts_with("u "))
        .expect("a u line in sysusers");
    let fields: Vec<&str> = sysuser.split_whitespace().collect();
    assert_eq!(fields[1], user, "sysusers creates the unit's user");
    assert!(sysuser.contains("/var/lib/phonecsp"), "{sysuser}");
    assert!(
        tmpfiles
            .lines()
            .any(|l| l.starts_with("d /run/cryptsetup-keys.d ")
                && l.split_whitespace().nth(4) == Some(user.as_str())),
        "tmpfiles gives the key-socket directory to the daemon's group"
    );
    assert!(unit.contains("ReadWritePaths=-/run/cryptsetup-keys.d"));
    // polkit answers the daemon, which is not root, about its callers only
    // for actions that name the daemon's user as their owner.
    let actions = read(&root.join("usr/share/polkit-1/actions/org.phonecsp.policy"));
    for action in ["org.phonecsp.pair", "org.phonecsp.unpair"] {
        let start = actions
            .find(&format!("<action id=\"{action}\">"))
            .unwrap_or_else(|| panic!("{action} is not in the polkit policy"));
        let end = start + actions[start..].find("</action>").expect("</action>");
        let body = &actions[start..end];
        assert!(
            body.contains(&format!(
                "<annotate key=\"org.freedesktop.policykit.owner\">unix-user:{user}</annotate>"
            )),
            "{action} names the unit's user as its owner: {body}"
        );
        for default in [
            "<allow_any>auth_admin</allow_any>",
            "<allow_inactive>auth_admin</allow_inactive>",
            "<allow_active>auth_admin_keep</allow_active>",
        ] {
            assert!(body.contains(default), "{action}: {default}");
        }
    }

    // p11-kit finds the module by its file name in its module directory.
    let module = read(&root.join("usr/share/p11-kit/modules/phonecsp.module"));
    let lib = module
        .lines()
        .find_map(|l| l.strip_prefix("module:"))
        .expect("module:")
        .trim();
    assert!(
        root.join(format!("usr/lib/{triplet}/pkcs11/{lib}"))
            .is_file()
    );

    completions_and_man_pages_work(root);

    // The keyscript is where the initramfs hook copies it from.
    let hook = read(&root.join("usr/share/initramfs-tools/hooks/phonecsp"));
    assert!(hook.contains("KEYSCRIPT=/usr/lib/phonecsp/phonecsp-keyscript"));
    assert!(hook.contains("CONFIG=/etc/phonecsp/phonecspd.toml"));

    // The default configuration is valid as installed, and so is its
    // example once uncommented.
    let conf = root.join("etc/phonecsp/phonecspd.toml");
    let check = |p: &Path| {
        let out = Command::new(root.join("usr/bin/phonecspd"))
            .arg("--check")
            .arg("--config")
            .arg(p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(check(&conf).contains("ok (0 handsets)"));
    let example: String = read(&conf)
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("# ")?;
            (l.starts_with('[') || l.contains(" = ")).then(|| format!("{l}\n"))
        })
        .collect();
    let uncommented = root.join("example.toml");
    std::fs::write(&uncommented, &example).unwrap();
    assert!(check(&uncommented).contains("ok (1 handsets)"), "{example}");

    // A second install keeps the administrator's configuration.
    std::fs::write(&conf, "[access]\nusers = [\"alice\"]\n").unwrap();
    let again = install(root);
    assert!(String::from_utf8_lossy(&again.stderr).contains("keeping the existing"));
    assert_eq!(read(&conf), "[access]\nusers = [\"alice\"]\n");
}

/// The completions and man pages are the command's, and usable: bash
/// loads its completion, the others have their shell's header, and every
/// page is a man page of its command (read with `man -l` where man-db is).
fn completions_and_man_pages_work(root: &Path) {
    let bash = root.join("usr/share/bash-completion/completions/phonecsp");
    let text = read(&bash);
    for word in ["sign", "luks", "enroll", "--handset", "--yes"] {
        assert!(text.contains(word), "the bash completion lacks {word}");
    }
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p phonecsp",
            bash.display()
        ))
        .output()
        .expect("bash");
    let said = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        loaded.status.success()
            && said.contains("_phonecsp")
            && said.trim_end().ends_with(" phonecsp"),
        "bash does not load the completion: {said}{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let zsh = read(&root.join("usr/share/zsh/vendor-completions/_phonecsp"));
    assert!(
        zsh.starts_with("#compdef phonecsp"),
        "{}",
        &zsh[..zsh.len().min(80)]
    );
    assert!(zsh.contains("'sign:"), "zsh lacks sign");
    let fish = read(&root.join("usr/share/fish/vendor_completions.d/phonecsp.fish"));
    assert!(fish.contains("complete -c phonecsp"));
    assert!(fish.contains("-a \"sign\""), "fish lacks sign");

    let man1 = root.join("usr/share/man/man1");
    let pages: Vec<String> = std::fs::read_dir(&man1)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(pages.len() > 20, "a page per command: {pages:?}");
    assert!(
        !pages.iter().any(|p| p.contains("generate")),
        "the hidden command has no page"
    );
    let man = ["/usr/bin/man", "/bin/man"]
        .into_iter()
        .find(|m| Path::new(m).exists());
    for page in &pages {
        let name = page.strip_suffix(".1").expect("section 1");
        assert!(name.starts_with("phonecsp"), "{page}");
        let roff = read(&man1.join(page));
        assert!(
            roff.contains(&format!(".TH {name} 1")),
            "{page}: no title line"
        );
        if let Some(man) = man {
            let o = Command::new(man)
                .arg("-l")
                .arg(man1.join(page))
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "80")
                .output()
                .expect("man");
            let shown = phonecsp_tests::succeeded(&o, &format!("man -l {page}"));
            assert!(
                shown.contains("NAME") && shown.contains("SYNOPSIS"),
                "{page}: {shown}"
            );
            // man justifies the lines: compare words.
            let words = shown.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                words.contains(&format!("NAME {name} - ")),
                "{page}: {shown}"
            );
        }
    }
    if man.is_none() {
        eprintln!(
            "man-db is not installed: the pages' roff headers were checked, not their rendering"
        );
    }
}

fn systemd_tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is missing: run scripts/install-deps (package systemd)");
}

/// A root with the distribution's units (the targets and sockets the unit
/// refers to) and phonecsp installed into it.
fn root_with_systemd_units() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("usr/lib/systemd");
    std::fs::create_dir_all(&units).unwrap();
    let system = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|p| Path::new(p).join("sysinit.target").exists())
        .expect("the distribution's systemd units (package systemd)");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(system)
        .arg(&units)
        .status()
        .unwrap();
    assert!(cp.success());
    install(root.path());
    root
}

/// What `systemd-analyze` says of `unit`, run by `analyze` with its
/// arguments: `verify` must pass and say nothing (unknown or misspelt
/// settings are only warnings: none is allowed), and `security`'s
/// exposure level be at most `limit`.
fn passes_systemd_analyze(unit: &str, limit: f64, analyze: impl Fn(&[&str]) -> Output) {
    let verify = analyze(&["verify"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {unit}: {said}"
    );
    let security = analyze(&["security", "--offline=yes", "--no-pager"]);
    let report = String::from_utf8_lossy(&security.stdout);
    let level = exposure(&report, unit).unwrap_or_else(|| {
        panic!(
            "no exposure level in: {report}{}",
            String::from_utf8_lossy(&security.stderr)
        )
    });
    assert!(
        level <= limit,
        "systemd-analyze security {unit}: {level} > {limit}\n{report}"
    );
}

#[test]
fn installed_unit_passes_systemd_analyze() {
    let root = root_with_systemd_units();
    passes_systemd_analyze("phonecspd.service", SECURITY_EXPOSURE, |args| {
        Command::new(systemd_tool("systemd-analyze"))
            .args(args)
            .arg(format!("--root={}", root.path().display()))
            .arg("phonecspd.service")
            .output()
            .unwrap()
    });
}

/// The exposure level `systemd-analyze security` prints for `unit`.
fn exposure(report: &str, unit: &str) -> Option<f64> {
    let label = format!("Overall exposure level for {unit}:");
    report
        .lines()
        .find_map(|l| l.split(label.as_str()).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[test]
fn installed_user_unit_passes_systemd_analyze() {
    let root = tempfile::tempdir().unwrap();
    install(root.path());
    let installed = read(
        &root
            .path()
            .join("usr/lib/systemd/user/phonecsp-handset.service"),
    );
    // systemd 252 has no --root for user units: the installed unit is
    // checked as a file, its ExecStart= pointed at the installed binary
    // (verify checks that it is executable), nothing else changed.
    let unit = root.path().join("phonecsp-handset.service");
    let binary = root.path().join("usr/bin/phonecsp-handset");
    std::fs::write(
        &unit,
        installed.replace(
            "ExecStart=/usr/bin/phonecsp-handset ",
            &format!("ExecStart={} ", binary.display()),
        ),
    )
    .unwrap();
    // A user manager's paths are under XDG_RUNTIME_DIR, which a test run
    // may not have: a private one.
    let runtime = tempfile::tempdir().unwrap();
    let analyze = |args: &[&str]| {
        Command::new(systemd_tool("systemd-analyze"))
            .arg("--user")
            .args(args)
            .arg(&unit)
            .env("XDG_RUNTIME_DIR", runtime.path())
            .output()
            .unwrap()
    };
    passes_systemd_analyze("phonecsp-handset.service", USER_SECURITY_EXPOSURE, analyze);
    let unit = read(
        &root
            .path()
            .join("usr/lib/systemd/user/phonecsp-handset.service"),
    );
    assert_eq!(
        ini_value(&unit, "ExecStart").as_deref(),
        Some("/usr/bin/phonecsp-handset serve --rfcomm")
    );
    assert_eq!(ini_value(&unit, "Restart").as_deref(), Some("on-failure"));
}

#[test]
fn sysusers_creates_the_daemon_user() {
    let dest = tempfile::tempdir().unwrap();
    install(dest.path());
    let out = Command::new(systemd_tool("systemd-sysusers"))
        // Every sysusers.d file in the root: only phonecsp's is there.
        .arg(format!("--root={}", dest.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-sysusers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = read(&dest.path().join("etc/passwd"));
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("phonecsp:"))
        .unwrap_or_else(|| panic!("no phonecsp user in {passwd}"));
    let f: Vec<&str> = entry.split(':').collect();
    let uid: u32 = f[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "a system user: {entry}");
    assert_eq!(f[5], "/var/lib/phonecsp");
    assert_eq!(f[6], "/usr/sbin/nologin");
    assert!(read(&dest.path().join("etc/group")).contains("phonecsp:"));
}
