"""What bench/run and bench/user share: processes, the emulated handset
paired with a daemon on a private bus, the paced relay, SoftHSM2, and the
sections of BENCHMARKS.md each script owns."""
import json, os, re, signal, socket, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
PIN = "123456"
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
P11KIT_CLIENT = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
# The paced links: (name, bytes per second, one-way latency in ms).
LINKS = [("115200 baud 8N1", 11520, 0), ("RFCOMM ~640 kbit/s, 30 ms", 80000, 30)]


def sh(cmd, **kw):
    r = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if r.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{r.stderr}")
    return r.stdout


def install(packages):
    subprocess.run([os.path.join(ROOT, "scripts", "install-deps")], check=True)
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if missing:
        if os.geteuid() != 0:
            sys.exit(f"bench: missing packages {missing}; run as root")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq"] + missing, check=True)


def build():
    subprocess.run(["cargo", "build", "--release", "--workspace", "--bins", "--lib", "--quiet"], cwd=ROOT, check=True)


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, cmd, **kw):
        p = subprocess.Popen(cmd, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def close(self):
        for p in list(self.procs):
            self.stop(p)


def wait_for(what, f, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if f():
                return
        except Exception:
            pass
        time.sleep(0.05)
    sys.exit(f"bench: timed out waiting for {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Phonecsp:
    """A private bus, the emulated handset serving a pty, and phonecspd
    paired with it. `containers` are made with one RSA-2048 key (id 01)
    each and all authorised for this computer."""

    def __init__(self, procs, work, containers, request_timeout=120, serve_args=()):
        self.procs, self.work = procs, work
        self.request_timeout = request_timeout
        bus_sock = os.path.join(work, "bus")
        procs.start(["dbus-daemon", "--session", f"--address=unix:path={bus_sock}", "--nofork"])
        wait_for("bus", lambda: os.path.exists(bus_sock))
        runtime = os.path.join(work, "run")
        os.makedirs(runtime, mode=0o700)
        self.env = dict(os.environ, PHONECSP_BUS=f"unix:path={bus_sock}", PHONECSP_PIN=PIN,
                        PHONECSP_DAEMON_USER=str(os.getuid()), XDG_RUNTIME_DIR=runtime)
        self.handset = [os.path.join(REL, "phonecsp-handset"), "--state", os.path.join(work, "handset")]
        self.cli = [os.path.join(REL, "phonecsp")]
        self.module = os.path.join(REL, "libphonecsp_pkcs11.so")
        sh(self.handset + ["init", "--name", "bench phone"], env=self.env)
        for c in containers:
            sh(self.handset + ["container", "create", c], env=self.env)
            sh(self.handset + ["key", "generate", c, "--id", "01", "--label", c], env=self.env)
        authorise = [a for c in containers for a in ("--authorise", c)]
        code = sh(self.handset + ["pair"] + authorise, env=self.env).strip()
        self.tty = os.path.join(work, "handset.tty")
        procs.start(self.handset + ["serve", "--pty", "--pty-link", self.tty] + list(serve_args),
                    env=self.env, stdout=subprocess.DEVNULL)
        wait_for("handset pty", lambda: os.path.exists(self.tty))
        self.daemon = self.start_daemon(self.tty)
        self.relay = None
        sh(self.cli + ["pair", "--code", code], env=self.env)
        self.wait_connected()

    def start_daemon(self, serial):
        cfg = os.path.join(self.work, "phonecspd.toml")
        with open(cfg, "w") as f:
            f.write(f'[daemon]\nstate_dir = "{self.work}/daemon"\nrequest_timeout_secs = {self.request_timeout}\n'
                    f'[access]\nusers = ["{os.getuid()}"]\n[[handset]]\nname = "phone"\nserial = "{serial}"\n')
        d = self.procs.start([os.path.join(REL, "phonecspd"), "--config", cfg, "--bus", self.env["PHONECSP_BUS"]],
                             stderr=open(os.path.join(self.work, "phonecspd.log"), "a"))
        wait_for("daemon", lambda: subprocess.run(self.cli + ["handsets"], env=self.env,
                                                  capture_output=True).returncode == 0)
        return d

    def wait_connected(self):
        wait_for("handset connected",
                 lambda: json.loads(sh(self.cli + ["--json", "handsets"], env=self.env))[0]["connected"], 60)

    def stats(self):
        """The link's counters: requests (one per round trip), bytes_out, bytes_in."""
        return json.loads(sh(self.cli + ["--json", "status"], env=self.env))["handsets"][0]["statistics"]

    def use_link(self, rate=None, latency_ms=0):
        """Restarts the daemon on the handset's pty directly (rate None) or
        through a relay paced at `rate` bytes/s with `latency_ms` each way."""
        self.procs.stop(self.daemon)
        if self.relay is not None:
            self.procs.stop(self.relay)
            self.relay = None
            os.remove(os.path.join(self.work, "relay.tty"))
        serial = self.tty
        if rate is not None:
            serial = os.path.join(self.work, "relay.tty")
            self.relay = self.procs.start([os.path.join(REL, "phonecsp-bench"), "relay", "--link", serial,
                                           "--target", self.tty, "--bytes-per-sec", str(rate),
                                           "--latency-ms", str(latency_ms)], stdout=subprocess.DEVNULL)
            wait_for("relay", lambda: os.path.exists(serial))
        self.daemon = self.start_daemon(serial)
        self.wait_connected()


def softhsm(work, env):
    """A SoftHSM2 token "bench" with an RSA-2048 key pair (id 01); returns
    the environment that points SoftHSM2 at it."""
    shdir = os.path.join(work, "softhsm")
    os.makedirs(os.path.join(shdir, "tokens"))
    with open(os.path.join(shdir, "softhsm2.conf"), "w") as f:
        f.write(f"directories.tokendir = {shdir}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = dict(env, SOFTHSM2_CONF=os.path.join(shdir, "softhsm2.conf"))
    sh(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", PIN, "--so-pin", "12345678"], env=env)
    sh(["pkcs11-tool", "--module", SOFTHSM, "--token-label", "bench", "--login", "--pin", PIN,
        "--keypairgen", "--key-type", "rsa:2048", "--id", "01", "--label", "bench"], env=env)
    return env


def write_sections(path, text):
    """Writes `text` into BENCHMARKS.md: each of its "## " sections replaces
    the section of the same heading where it stands (or is appended), and a
    "# " head, if `text` has one, replaces the file's. Sections another
    script wrote are kept as they are."""
    split = lambda t: re.split(r"(?m)^(?=## )", t.rstrip("\n") + "\n")
    old = split(open(path).read()) if os.path.exists(path) else [""]
    new = split(text)
    title = lambda s: s.splitlines()[0]
    fresh = {title(s): s for s in new[1:]}
    head = new[0] if new[0].strip() else old[0]
    body = [fresh.pop(title(s), s) for s in old[1:]] + list(fresh.values())
    with open(path, "w") as f:
        f.write(head.rstrip("\n") + "\n\n" + "\n".join(s.rstrip("\n") + "\n" for s in body))
