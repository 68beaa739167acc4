//! `/etc/phonecsp/phonecspd.toml`: the handsets and how to reach them,
//! who may use which token, and the disk volumes whose keys the daemon
//! serves to `systemd-cryptsetup`. A file that does not parse or does not make
//! sense is refused at start with its path, line and the reason.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG: &str = "/etc/phonecsp/phonecspd.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/phonecsp";
/// Where `systemd-cryptsetup` looks for a volume's key file or socket.
pub const DEFAULT_KEY_SOCKET_DIR: &str = "/run/cryptsetup-keys.d";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Every section may be left out (`default`): an empty file is a valid
/// configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub daemon: DaemonSection,
    pub access: AccessList,
    #[serde(rename = "handset")]
    pub handsets: Vec<HandsetConfig>,
    #[serde(rename = "token")]
    pub tokens: Vec<TokenAccess>,
    #[serde(rename = "volume")]
    pub volumes: Vec<VolumeConfig>,
}

/// A disk volume whose key the daemon serves on
/// `<key_socket_dir>/<name>.key` to `systemd-cryptsetup`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// The volume's name, as in `/etc/crypttab` (`systemd-cryptsetup@<name>`).
    pub name: String,
    /// The LUKS2 device whose `phonecsp` token holds the wrapped key.
    pub device: Option<PathBuf>,
    /// A detached LUKS2 header holding the token, with `device`.
    pub header: Option<PathBuf>,
    /// Which `phonecsp` token, with `device` (default: the first one
    /// wrapped to a handset).
    pub token_id: Option<u32>,
    /// A wrapped-key file (`phonecsp luks enroll --wrapped-file`), instead
    /// of `device`.
    pub wrapped: Option<PathBuf>,
    /// A file holding the container's PIN, owned by root or the daemon's
    /// user and readable by nobody else (unattended machines). Without it
    /// the PIN is asked with `systemd-ask-password`.
    pub pin_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    pub state_dir: PathBuf,
    /// Shown on the phone when pairing; defaults to the host name.
    pub host_name: Option<String>,
    pub request_timeout_secs: u64,
    pub health_interval_secs: u64,
    /// Longest wait between reconnection attempts.
    pub max_backoff_secs: u64,
    /// Where the `[[volume]]` key sockets are made.
    pub key_socket_dir: PathBuf,
    /// How long a PIN agent's prompt may stay unanswered.
    pub prompt_timeout_secs: u64,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            state_dir: DEFAULT_STATE_DIR.into(),
            host_name: None,
            request_timeout_secs: 60,
            health_interval_secs: 30,
            max_backoff_secs: 5,
            key_socket_dir: DEFAULT_KEY_SOCKET_DIR.into(),
            prompt_timeout_secs: 120,
        }
    }
}

impl DaemonSection {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn prompt_timeout(&self) -> Duration {
        Duration::from_secs(self.prompt_timeout_secs.max(1))
    }
}

/// Users and groups (names or numbers).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessList {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// An allow list for one token (container), optionally on one handset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenAccess {
    pub name: String,
    pub handset: Option<String>,
    #[serde(flatten)]
    pub allow: AccessList,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandsetConfig {
    pub name: String,
    /// A serial device (`/dev/ttyACM0`, `/dev/rfcomm0`, a pty).
    pub serial: Option<PathBuf>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// A Bluetooth address; with `channel` it is dialled directly, without
    /// it the Serial Port Profile is found through SDP.
    pub bluetooth: Option<String>,
    pub channel: Option<u8>,
    /// Local adapter for Bluetooth (`hci0`).
    pub adapter: Option<String>,
}

fn default_baud() -> u32 {
    115200
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Serial {
        path: PathBuf,
        baud: u32,
    },
    Bluetooth {
        address: bluer::Address,
        channel: Option<u8>,
        adapter: Option<String>,
    },
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Serial { path, baud } => write!(f, "serial:{}@{baud}", path.display()),
            Transport::Bluetooth {
                address, channel, ..
            } => match channel {
                Some(c) => write!(f, "bluetooth:{address}#{c}"),
                None => write!(f, "bluetooth:{address}#spp"),
            },
        }
    }
}

impl HandsetConfig {
    pub fn transport(&self) -> Result<Transport, String> {
        match (&self.serial, &self.bluetooth) {
            (Some(path), None) => {
                if self.channel.is_some() || self.adapter.is_some() {
                    return Err(format!(
                        "handset '{}': channel/adapter are for Bluetooth",
                        self.name
                    ));
                }
                Ok(Transport::Serial {
                    path: path.clone(),
                    baud: self.baud,
                })
            }
            (None, Some(addr)) => {
                let address = addr.parse().map_err(|_| {
                    format!(
                        "handset '{}': '{addr}' is not a Bluetooth address",
                        self.name
                    )
                })?;
                if self.channel.is_some_and(|c| !(1..=30).contains(&c)) {
                    return Err(format!(
                        "handset '{}': RFCOMM channel must be 1-30",
                        self.name
                    ));
                }
                Ok(Transport::Bluetooth {
                    address,
                    channel: self.channel,
                    adapter: self.adapter.clone(),
                })
            }
            _ => Err(format!(
                "handset '{}': give exactly one of `serial` or `bluetooth`",
                self.name
            )),
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A volume name that is also a safe file name (`<name>.key`).
fn valid_volume_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c.is_control())
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |offset: usize, message: String| {
            let before = &text[..offset.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            invalid(offset, e.message().to_owned())
        })?;
        // Semantic checks point at the entry's name in the file.
        let locate = |needle: &str| {
            text.find(&format!("\"{needle}\""))
                .or_else(|| text.find(needle))
                .unwrap_or(0)
        };
        let mut seen = std::collections::HashSet::new();
        for h in &config.handsets {
            if !valid_name(&h.name) {
                return Err(invalid(
                    locate(&h.name),
                    format!("handset name '{}' must be 1-32 of [A-Za-z0-9_-]", h.name),
                ));
            }
            if !seen.insert(h.name.clone()) {
                return Err(invalid(
                    locate(&h.name),
                    format!("handset '{}' is defined twice", h.name),
                ));
            }
            h.transport().map_err(|m| invalid(locate(&h.name), m))?;
        }
        for t in &config.tokens {
            if let Some(h) = &t.handset
                && !seen.contains(h)
            {
                return Err(invalid(
                    locate(h),
                    format!("token '{}' names unknown handset '{h}'", t.name),
                ));
            }
        }
        let mut volumes = std::collections::HashSet::new();
        for v in &config.volumes {
            let at = locate(&v.name);
            if !valid_volume_name(&v.name) {
                return Err(invalid(
                    at,
                    format!(
                        "volume name '{}' must be 1-128 characters without '/' or control characters",
                        v.name
                    ),
                ));
            }
            if !volumes.insert(v.name.clone()) {
                return Err(invalid(at, format!("volume '{}' is defined twice", v.name)));
            }
            match (&v.device, &v.wrapped) {
                (Some(_), None) => {}
                (None, Some(_)) if v.header.is_none() && v.token_id.is_none() => {}
                (None, Some(_)) => {
                    return Err(invalid(
                        at,
                        format!("volume '{}': header and token_id go with device", v.name),
                    ));
                }
                _ => {
                    return Err(invalid(
                        at,
                        format!(
                            "volume '{}': give exactly one of `device` or `wrapped`",
                            v.name
                        ),
                    ));
                }
            }
        }
        if config.daemon.request_timeout_secs == 0 {
            return Err(invalid(
                locate("request_timeout_secs"),
                "request_timeout_secs must be at least 1".into(),
            ));
        }
        Ok(config)
    }

    /// The allow list that governs `token` on `handset`.
    pub fn access_for(&self, handset: &str, token: &str) -> &AccessList {
        self.tokens
            .iter()
            .find(|t| t.name == token && t.handset.as_deref() == Some(handset))
            .or_else(|| {
                self.tokens
                    .iter()
                    .find(|t| t.name == token && t.handset.is_none())
            })
            .map(|t| &t.allow)
            .unwrap_or(&self.access)
    }

    pub fn host_name(&self) -> String {
        self.daemon.host_name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "computer".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn parses_a_full_file() {
        let c = parse(
            r#"
[daemon]
state_dir = "/tmp/x"
request_timeout_secs = 5

[access]
users = ["alice"]

[[handset]]
name = "phone"
serial = "/dev/ttyACM0"

[[handset]]
name = "bt"
bluetooth = "00:11:22:33:44:55"
channel = 3

[[token]]
name = "ssh"
handset = "phone"
users = ["bob"]
groups = ["wheel"]
"#,
        )
        .unwrap();
        assert_eq!(c.handsets.len(), 2);
        assert_eq!(
            c.handsets[1].transport().unwrap().to_string(),
            "bluetooth:00:11:22:33:44:55#3"
        );
        assert_eq!(c.access_for("phone", "ssh").users, vec!["bob"]);
        assert_eq!(c.access_for("phone", "disk").users, vec!["alice"]);
        assert_eq!(c.daemon.request_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_line() {
        // (configuration, how the message starts, what it says)
        let refused = [
            (
                "[daemon]\nstate_dir = \"/x\"\nbogus = 1\n",
                "test.toml:3:",
                "bogus",
            ),
            (
                "[[handset]]\nname = \"p\"\n",
                "test.toml:2:",
                "exactly one of",
            ),
            (
                "[[handset]]\nname = \"p\"\nbluetooth = \"zz\"\n",
                "",
                "not a Bluetooth address",
            ),
            (
                "[[handset]]\nname = \"p\"\nserial = \"/a\"\n[[handset]]\nname = \"p\"\nserial = \"/b\"\n",
                "",
                "twice",
            ),
            ("[daemon\n", "test.toml:1:", ""),
            (
                "[[volume]]\nname = \"data\"\n",
                "",
                "exactly one of `device` or `wrapped`",
            ),
            (
                "[[volume]]\nname = \"a/b\"\nwrapped = \"/x\"\n",
                "",
                "without '/'",
            ),
            (
                "[[volume]]\nname = \"d\"\nwrapped = \"/x\"\ntoken_id = 1\n",
                "",
                "go with device",
            ),
            (
                "[[token]]\nname = \"ssh\"\nhandset = \"nope\"\n",
                "",
                "unknown handset",
            ),
        ];
        for (text, starts, says) in refused {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(starts) && e.contains(says), "{text:?}: {e}");
        }

        let c = parse("[daemon]\nkey_socket_dir = \"/tmp/k\"\n[[volume]]\nname = \"data\"\ndevice = \"/dev/sdb\"\ntoken_id = 2\npin_file = \"/etc/phonecsp/data.pin\"\n").unwrap();
        assert_eq!(c.volumes[0].token_id, Some(2));
        assert_eq!(c.daemon.key_socket_dir, PathBuf::from("/tmp/k"));
        assert_eq!(
            parse("").unwrap().daemon.key_socket_dir,
            PathBuf::from(DEFAULT_KEY_SOCKET_DIR)
        );
    }
}
