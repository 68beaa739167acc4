//! systemd's own PKCS#11 path for LUKS2, end to end through the module:
//! `systemd-cryptenroll --pkcs11-token-uri=` reads the certificate of a
//! handset key, encrypts a fresh secret to it (RSA PKCS#1 v1.5) and stores
//! it in a `systemd-pkcs11` token with a keyslot of its own; `cryptsetup
//! open --token-only` then unlocks through systemd's token plugin
//! (`libcryptsetup-token-systemd-pkcs11.so`), which logs in and calls
//! `C_Decrypt` with `CKM_RSA_PKCS` on the handset's key. LUKS2 image files;
//! no device-mapper (`--test-passphrase`). A container whose PIN is typed
//! on the phone takes systemd's protected-authentication-path branch.
//!
//! Both programs load PKCS#11 modules through p11-kit, which reads only
//! its system module directories for root. As root the module is put in
//! `/usr/share/p11-kit/modules`, as an installation would have it, inside
//! a private mount namespace of the command (the only module there, so
//! that other modules on the machine are not under test); as an
//! unprivileged user (uid 65534 under root) it is in the user's
//! `~/.config/pkcs11/modules`, with `user-config: only`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine;
use phonecsp_tests::{Daemon, Handset, PIN, TestBus, is_root, phonecsp, pkcs11_module, wait_until};

const CRYPTSETUP: &str = "/sbin/cryptsetup";
const CRYPTENROLL: &str = "systemd-cryptenroll";
/// p11-kit's package module directory, where an installation puts
/// `phonecsp.module` (p11-kit also reads `/etc/pkcs11/modules`, which
/// Debian does not have by default).
const P11_KIT_MODULES: &str = "/usr/share/p11-kit/modules";
const OLD_PASSPHRASE: &[u8] = b"the old passphrase";
const NOBODY: u32 = 65534;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).expect("chmod");
}

/// A LUKS2 image with one passphrase keyslot (fast PBKDF for tests).
fn luks_format(image: &Path, key_file: &Path) {
    std::fs::write(key_file, OLD_PASSPHRASE).expect("key file");
    chmod(key_file, 0o600);
    let f = std::fs::File::create(image).expect("image");
    f.set_len(24 << 20).expect("image size");
    let o = Command::new(CRYPTSETUP)
        .args(["luksFormat", "--batch-mode", "--type", "luks2"])
        .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
        .arg("--key-file")
        .arg(key_file)
        .arg(image)
        .output()
        .expect("cryptsetup (install cryptsetup-bin)");
    ok(&o, "luksFormat");
}

fn metadata(image: &Path) -> serde_json::Value {
    let o = Command::new(CRYPTSETUP)
        .args(["luksDump", "--dump-json-metadata"])
        .arg(image)
        .output()
        .expect("cryptsetup");
    serde_json::from_str(&ok(&o, "luksDump")).expect("LUKS2 JSON metadata")
}

fn keyslots(image: &Path) -> Vec<String> {
    let mut k: Vec<String> = metadata(image)["keyslots"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// The header's tokens, by token id.
fn tokens(image: &Path) -> serde_json::Map<String, serde_json::Value> {
    metadata(image)["tokens"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// Whether `key` opens the image (cryptsetup reads it from stdin).
fn opens(image: &Path, key: &[u8], keyslot: Option<&str>) -> bool {
    let mut c = Command::new(CRYPTSETUP);
    c.args(["open", "--test-passphrase", "--key-file=-"]);
    if let Some(k) = keyslot {
        c.args(["--key-slot", k]);
    }
    let mut c = c
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cryptsetup");
    if let Some(mut i) = c.stdin.take() {
        let _ = i.write_all(key);
    }
    c.wait().is_ok_and(|s| s.success())
}

struct Fx {
    root: tempfile::TempDir,
    bus: TestBus,
    handset: Handset,
    _daemon: Daemon,
    image: PathBuf,
    old_key: PathBuf,
}

impl Fx {
    /// Containers `ssh` (key 01) and `disk` (key 02, no certificate yet),
    /// both authorised; the daemon started and paired; a LUKS2 image with
    /// a passphrase keyslot. `extra` goes into the daemon's configuration.
    fn new(extra: &str) -> Fx {
        Fx::with_handset(extra, |_, _| {})
    }

    /// Like [`Fx::new`], with `setup` run on the handset (and the test's
    /// directory) before it starts serving.
    fn with_handset(extra: &str, setup: impl FnOnce(&mut Handset, &Path)) -> Fx {
        let root = tempfile::tempdir().expect("tempdir");
        chmod(root.path(), 0o755);
        let bus = TestBus::start();
        let mut handset = Handset::create(root.path());
        handset.cli_ok(&[
            "key", "generate", "disk", "--id", "02", "--label", "disk key",
        ]);
        let code = handset.offer_pairing(&["ssh", "disk"]);
        setup(&mut handset, root.path());
        handset.start();
        let daemon = Daemon::start(&bus, root.path(), &handset, extra);
        ok(
            &phonecsp(&bus, None, &["pair", "--code", &code], &[]),
            "pair",
        );
        let image = root.path().join("disk.img");
        let old_key = root.path().join("old.key");
        luks_format(&image, &old_key);
        let f = Fx {
            root,
            bus,
            handset,
            _daemon: daemon,
            image,
            old_key,
        };
        f.wait_connected(true);
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn cli(&self, args: &[&str]) -> Output {
        phonecsp(&self.bus, None, args, &[("PHONECSP_PIN", PIN)])
    }

    fn wait_connected(&self, connected: bool) {
        let want = format!("\"connected\": {connected}");
        wait_until(&want, Duration::from_secs(20), || {
            let o = phonecsp(&self.bus, None, &["--json", "handsets"], &[]);
            o.status.success() && text(&o.stdout).contains(&want)
        });
    }

    /// `phonecsp cert self-sign` for a key of the `disk` token.
    fn self_sign(&self, id: &str) {
        ok(
            &self.cli(&[
                "cert",
                "self-sign",
                "disk",
                "--id",
                id,
                "--subject",
                "CN=disk",
            ]),
            "cert self-sign",
        );
    }

    /// The p11-kit module configuration: the one the project ships, with
    /// the built library's absolute path.
    fn module_config(&self) -> String {
        let shipped =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../pkcs11-shim/p11-kit/phonecsp.module");
        let shipped =
            std::fs::read_to_string(&shipped).expect("pkcs11-shim/p11-kit/phonecsp.module");
        let module = pkcs11_module();
        let mut found = false;
        let config: Vec<String> = shipped
            .lines()
            .map(|l| {
                if l.starts_with("module:") {
                    found = true;
                    format!("module: {}", module.display())
                } else {
                    l.to_owned()
                }
            })
            .collect();
        assert!(found, "no module: line in the shipped p11-kit file");
        config.join("\n") + "\n"
    }
}

/// Daemon configuration letting uid 65534 (the user route under root)
/// use the `disk` token too.
fn nobody_may_use_disk() -> String {
    format!(
        "[[token]]\nname = \"disk\"\nusers = [\"{}\", \"{NOBODY}\"]\n",
        nix::unistd::getuid()
    )
}

/// How `systemd-cryptenroll` and `cryptsetup` get to load the module
/// through p11-kit.
enum P11Kit {
    /// As root: this directory, holding only `phonecsp.module`, is
    /// mounted over [`P11_KIT_MODULES`] in the command's own namespace.
    System { modules: PathBuf },
    /// As an unprivileged user, with the module in
    /// `$HOME/.config/pkcs11/modules` and `user-config: only`.
    User { home: PathBuf, uid: Option<u32> },
}

impl P11Kit {
    /// The system route, if this process may make mount namespaces.
    fn system(f: &Fx) -> Option<P11Kit> {
        if !is_root() || !Path::new(P11_KIT_MODULES).is_dir() {
            return None;
        }
        let probe = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "true"])
            .stderr(Stdio::null())
            .status();
        if !probe.is_ok_and(|s| s.success()) {
            return None;
        }
        // Only our module: whatever else this machine has registered is
        // not under test (systemd 252's `list` stops at the first token it
        // cannot open a session on, such as an uninitialised SoftHSM one).
        let modules = f.path("p11-kit-modules");
        std::fs::create_dir(&modules).expect("mkdir");
        std::fs::write(modules.join("phonecsp.module"), f.module_config()).expect("module file");
        Some(P11Kit::System { modules })
    }

    /// The user route: the test's own uid, or uid 65534 under root (the
    /// image, the key file and the module must then be its to use).
    fn user(f: &Fx) -> Option<P11Kit> {
        let home = f.path("home");
        let dir = home.join(".config/pkcs11/modules");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("phonecsp.module"), f.module_config()).expect("module file");
        // The user's modules only, as for the system route.
        std::fs::write(
            home.join(".config/pkcs11/pkcs11.conf"),
            "user-config: only\n",
        )
        .expect("pkcs11.conf");
        if !is_root() {
            return Some(P11Kit::User { home, uid: None });
        }
        let owner = Some(nix::unistd::Uid::from_raw(NOBODY));
        let group = Some(nix::unistd::Gid::from_raw(NOBODY));
        for p in [
            &home,
            &home.join(".config"),
            &home.join(".config/pkcs11"),
            &dir,
            &f.image,
            &f.old_key,
        ] {
            nix::unistd::chown(p.as_path(), owner, group).expect("chown");
        }
        let readable = Command::new("setpriv")
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", "test", "-r"])
            .arg(pkcs11_module())
            .status();
        readable.is_ok_and(|s| s.success()).then_some(P11Kit::User {
            home,
            uid: Some(NOBODY),
        })
    }

    /// `program args` with the module registered, the daemon's bus in the
    /// environment, and at most two minutes to finish.
    fn command(&self, f: &Fx, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["--kill-after=5", "120"]);
        match self {
            P11Kit::System { modules } => {
                c.args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
                    .arg(format!(
                        "mount --bind \"$0\" {P11_KIT_MODULES} && exec \"$@\""
                    ))
                    .arg(modules);
            }
            P11Kit::User { home, uid } => {
                if let Some(uid) = uid {
                    c.arg("setpriv")
                        .arg(format!("--reuid={uid}"))
                        .arg(format!("--regid={uid}"))
                        .arg("--clear-groups");
                }
                c.env("HOME", home);
            }
        }
        c.arg(program)
            .args(args)
            .env("PHONECSP_BUS", &f.bus.address)
            .env("PHONECSP_DAEMON_USER", nix::unistd::getuid().to_string())
            .env_remove("PHONECSP_PIN")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("PIN")
            .env_remove("PASSWORD");
        c
    }

    fn run(
        &self,
        f: &Fx,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: &[u8],
    ) -> Output {
        let mut c = self.command(f, program, args);
        c.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect(program);
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin);
        }
        child.wait_with_output().expect(program)
    }

    /// `systemd-cryptenroll --pkcs11-token-uri=URI`, the PIN in `$PIN`
    /// (systemd's way for scripts), the old passphrase from its file.
    fn enroll(&self, f: &Fx, uri: &str, pin: &str) -> Output {
        let unlock = format!("--unlock-key-file={}", s(&f.old_key));
        let token = format!("--pkcs11-token-uri={uri}");
        self.run(
            f,
            CRYPTENROLL,
            &[&unlock, &token, s(&f.image)],
            &[("PIN", pin)],
            b"",
        )
    }

    /// The URI `systemd-cryptenroll --pkcs11-token-uri=list` shows for the
    /// `disk` token.
    fn listed_uri(&self, f: &Fx) -> String {
        let o = self.run(f, CRYPTENROLL, &["--pkcs11-token-uri=list"], &[], b"");
        let listed = ok(&o, "systemd-cryptenroll --pkcs11-token-uri=list");
        listed
            .split_whitespace()
            .find(|w| {
                w.strip_prefix("pkcs11:")
                    .is_some_and(|a| a.split(';').any(|a| a == "token=disk"))
            })
            .unwrap_or_else(|| panic!("no disk token in:\n{listed}"))
            .to_owned()
    }

    /// `cryptsetup open --test-passphrase --token-only`: systemd's token
    /// plugin asks cryptsetup for the PIN, which reads it from stdin.
    fn unlock(&self, f: &Fx, pin: &str, token_id: Option<&str>) -> Output {
        let mut args = vec![
            "open",
            "--test-passphrase",
            "--token-only",
            "--token-type",
            "systemd-pkcs11",
        ];
        if let Some(t) = token_id {
            args.extend(["--token-id", t]);
        }
        args.push(s(&f.image));
        self.run(f, CRYPTSETUP, &args, &[], format!("{pin}\n").as_bytes())
    }

    #[track_caller]
    fn unlocks(&self, f: &Fx, token_id: Option<&str>) {
        let o = self.unlock(f, PIN, token_id);
        ok(&o, "cryptsetup open --token-only");
        let err = text(&o.stderr);
        assert!(
            err.contains("Successfully decrypted key with security token"),
            "{err}"
        );
    }

    #[track_caller]
    fn stays_locked(&self, f: &Fx, pin: &str, token_id: Option<&str>) -> String {
        let o = self.unlock(f, pin, token_id);
        assert!(!o.status.success(), "the disk opened:\n{}", text(&o.stderr));
        text(&o.stderr)
    }
}

/// The secret systemd stored in the `systemd-pkcs11` token `token`,
/// decrypted by the phone outside the module (`phonecsp decrypt
/// --mechanism RSA-PKCS`): its base64 is the keyslot's passphrase.
fn stored_passphrase(f: &Fx, token: &serde_json::Value, key_id: &str) -> Vec<u8> {
    let wrapped = token["pkcs11-key"].as_str().expect("pkcs11-key");
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(wrapped)
        .expect("base64 pkcs11-key");
    assert_eq!(wrapped.len(), 256, "one RSA-2048 block");
    let input = f.path("pkcs11-key.bin");
    std::fs::write(&input, wrapped).expect("write");
    let o = f.cli(&[
        "decrypt",
        "disk",
        "--key",
        key_id,
        "--mechanism",
        "RSA-PKCS",
        "--in",
        s(&input),
    ]);
    assert!(o.status.success(), "phonecsp decrypt: {}", text(&o.stderr));
    base64::engine::general_purpose::STANDARD
        .encode(&o.stdout)
        .into_bytes()
}

#[test]
fn cryptenroll_enrols_through_the_module_and_the_token_plugin_unlocks() {
    let mut f = Fx::new("");
    let Some(p11) = P11Kit::system(&f) else {
        eprintln!(
            "SKIPPED: registering the module in p11-kit's system directory needs root and a mount namespace (the user-config test still runs)"
        );
        return;
    };
    let uri = p11.listed_uri(&f);
    assert!(uri.contains("manufacturer=phonecsp"), "{uri}");
    // The key by its CKA_ID, so that another key in the token later
    // does not make the URI ambiguous (systemd then refuses).
    let uri02 = format!("{uri};id=%02");

    // No certificate yet: systemd has no public key to encrypt to.
    let o = p11.enroll(&f, &uri02, PIN);
    assert!(!o.status.success(), "enrolled without a certificate");
    assert!(
        text(&o.stderr).contains("certificate"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(keyslots(&f.image), ["0"]);
    assert!(tokens(&f.image).is_empty());

    // With one: a new keyslot and a systemd-pkcs11 token; keyslot 0 untouched.
    f.self_sign("02");
    let o = p11.enroll(&f, &uri02, PIN);
    ok(&o, "systemd-cryptenroll");
    assert!(
        text(&o.stderr).contains("enrolled as key slot 1"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(keyslots(&f.image), ["0", "1"]);
    assert!(opens(&f.image, OLD_PASSPHRASE, Some("0")));
    let t = tokens(&f.image);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t["0"]["type"], "systemd-pkcs11");
    assert_eq!(t["0"]["keyslots"], serde_json::json!(["1"]));
    assert_eq!(t["0"]["pkcs11-uri"], uri02.as_str());
    // What systemd stored is RSA PKCS#1 v1.5 to key 02: the phone decrypts
    // it, and its base64 opens keyslot 1 (and only that one).
    let passphrase = stored_passphrase(&f, &t["0"], "02");
    assert!(opens(&f.image, &passphrase, Some("1")));
    assert!(!opens(&f.image, &passphrase, Some("0")));

    // systemd's token plugin: login, then C_Decrypt with CKM_RSA_PKCS.
    p11.unlocks(&f, None);

    // A wrong PIN: refused, the disk stays locked; then the right one.
    let err = p11.stays_locked(&f, "000000", None);
    assert!(err.contains("incorrect"), "{err}");
    p11.unlocks(&f, None);

    // The phone away: locked; back: unlocks.
    f.handset.kill();
    f.wait_connected(false);
    p11.stays_locked(&f, PIN, None);
    f.handset.start();
    f.wait_connected(true);
    p11.unlocks(&f, None);

    // The token-wide URI `list` showed also works while the token has
    // one key...
    ok(&p11.enroll(&f, &uri, PIN), "systemd-cryptenroll, token URI");
    assert_eq!(keyslots(&f.image), ["0", "1", "2"]);
    p11.unlocks(&f, Some("1"));

    // ...but not once a second key (with its own certificate) is there:
    // systemd refuses a URI that matches two private keys. Each key
    // enrolled by its id unlocks with its own key.
    ok(
        &f.cli(&["keygen", "disk", "--id", "03", "--label", "second"]),
        "keygen",
    );
    f.self_sign("03");
    let uri03 = format!("{uri};id=%03");
    ok(&p11.enroll(&f, &uri03, PIN), "systemd-cryptenroll, key 03");
    assert_eq!(keyslots(&f.image), ["0", "1", "2", "3"]);
    let t = tokens(&f.image);
    assert_eq!(t["2"]["pkcs11-uri"], uri03.as_str());
    assert_eq!(t["2"]["keyslots"], serde_json::json!(["3"]));
    let passphrase = stored_passphrase(&f, &t["2"], "03");
    assert!(opens(&f.image, &passphrase, Some("3")));
    p11.unlocks(&f, Some("0"));
    p11.unlocks(&f, Some("2"));
    let err = p11.stays_locked(&f, PIN, Some("1"));
    assert!(err.contains("multiple keys"), "{err}");
}

#[test]
fn cryptenroll_finds_the_module_in_a_users_p11_kit_config() {
    let f = Fx::new(&nobody_may_use_disk());
    let Some(p11) = P11Kit::user(&f) else {
        eprintln!("SKIPPED: uid {NOBODY} cannot read the built module");
        return;
    };
    f.self_sign("02");
    let uri = "pkcs11:manufacturer=phonecsp;token=disk;id=%02";
    ok(&p11.enroll(&f, uri, PIN), "systemd-cryptenroll");
    assert_eq!(keyslots(&f.image), ["0", "1"]);
    assert_eq!(tokens(&f.image)["0"]["pkcs11-uri"], uri);
    p11.unlocks(&f, None);
    p11.stays_locked(&f, "000000", None);
    // Without the user's configuration p11-kit has no phonecsp module.
    if let P11Kit::User { uid, .. } = &p11 {
        let bare = P11Kit::User {
            home: f.path("empty-home"),
            uid: *uid,
        };
        let err = bare.stays_locked(&f, PIN, None);
        assert!(!err.contains("Successfully"), "{err}");
    }
}

/// A container whose PIN is typed on the phone: the token has a protected
/// authentication path, so systemd logs in with no PIN (`C_Login` with
/// NULL) both to enrol and in its token plugin, and the handset asks its
/// owner. No answer on the phone leaves the disk locked.
#[test]
fn pin_typed_on_the_phone_enrols_and_unlocks_with_no_pin_on_the_computer() {
    let mut phone_pin = PathBuf::new();
    let f = Fx::with_handset(&nobody_may_use_disk(), |h, root| {
        h.cli_ok(&["container", "pin-entry", "disk", "handset"]);
        phone_pin = root.join("phone-pin");
        h.set_serve_args(&[
            "--prompt-command",
            &format!(
                "test \"$PHONECSP_OPERATION\" = pin && cat {}",
                phone_pin.display()
            ),
        ]);
    });
    let Some(p11) = P11Kit::system(&f).or_else(|| P11Kit::user(&f)) else {
        eprintln!("SKIPPED: uid {NOBODY} cannot read the built module");
        return;
    };
    std::fs::write(&phone_pin, format!("{PIN}\n")).expect("phone PIN");
    f.self_sign("02");
    let uri = "pkcs11:manufacturer=phonecsp;token=disk;id=%02";
    let o = p11.enroll(&f, uri, "");
    ok(&o, "systemd-cryptenroll");
    let err = text(&o.stderr);
    assert!(err.contains("protected authentication path"), "{err}");
    assert_eq!(keyslots(&f.image), ["0", "1"]);

    // No PIN on stdin: the plugin logs in through the phone.
    let o = p11.unlock(&f, "", None);
    ok(&o, "cryptsetup open --token-only");
    let err = text(&o.stderr);
    assert!(err.contains("protected authentication path"), "{err}");
    assert!(err.contains("Successfully decrypted key"), "{err}");

    // The owner does not answer: locked. Then answers: open.
    std::fs::remove_file(&phone_pin).expect("rm");
    p11.stays_locked(&f, "", None);
    std::fs::write(&phone_pin, format!("{PIN}\n")).expect("phone PIN");
    ok(&p11.unlock(&f, "", None), "cryptsetup open --token-only");
}
