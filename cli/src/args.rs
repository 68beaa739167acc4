//! What may be typed: the command line's options and subcommands (clap),
//! with their help texts, and the parsers of ids and key sizes.

pub(crate) use crate::id::Id;

use clap::{Args, Parser, Subcommand};
use phonecsp::Bus;

pub(crate) const LONG_ABOUT: &str = "\
Use the keys on your phone from the command line.

phonecsp talks to the phonecsp daemon (phonecspd) over D-Bus. The private keys \
stay on the handset; the computer hashes, and only digests and ciphertexts cross \
the link. A TOKEN is a container on the handset (e.g. ssh, disk, web); keys and \
certificates in it are named by their CKA_ID, given in hex (--key, --id).

Commands that use a private key or change the token (sign, decrypt, keygen, \
cert import, cert delete) log in first: the PIN comes from the environment \
variable PHONECSP_PIN, else it is read from the terminal without echo. Before \
any PIN or pairing code is sent, phonecsp checks that the daemon's bus name is \
owned by the daemon's user (PHONECSP_DAEMON_USER: a user name or uid; default \
the user phonecsp if it exists, else root).";

pub(crate) const AFTER_HELP: &str = "\
Environment:
  PHONECSP_BUS           system, session or a D-Bus address (default: system)
  PHONECSP_DAEMON_USER   user the daemon must run as (name or uid)
  PHONECSP_PIN           the token's PIN (else asked on the terminal)
  PHONECSP_NEW_PIN       the new PIN for `pin change`
  PHONECSP_PAIRING_CODE  the one-time code for `pair`

Exit codes:
  0  success
  1  the operation failed (verify: the signature is invalid)
  2  usage error
  3  the daemon is unreachable, or another D-Bus error
  4  the token refused (its CK_RV is reported: wrong PIN, not allowed, ...)
  5  the daemon is not running as its configured user: nothing was sent

Examples:
  phonecsp status
  phonecsp --handset pixel sign ssh --key 01 --in message.txt --out message.sig
  phonecsp --json tokens";

#[derive(Parser, Debug)]
#[command(
    name = "phonecsp",
    version,
    about = "Use the keys on your phone: the phonecsp daemon's command line",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub(crate) struct Cli {
    /// The bus the daemon is on: system, session or a D-Bus address
    /// [default: $PHONECSP_BUS, else system]
    #[arg(long, global = true, value_name = "system|session|ADDRESS")]
    pub(crate) bus: Option<Bus>,

    /// Print one JSON document on stdout, for scripts
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// The handset to use [default: the only configured handset]
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) handset: Option<String>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Answer PIN prompts for this user's programs (a PIN agent), until Ctrl-C
    #[command(after_help = "A program that signs or decrypts with a key object \
(org.phonecsp.Key1) without having logged in gets its PIN through the agent.\n\n\
Examples:\n  phonecsp agent\n  phonecsp agent --askpass /usr/bin/ssh-askpass")]
    Agent {
        /// Ask with this program (as SSH_ASKPASS: it gets the prompt as its
        /// argument and prints the PIN; a non-zero exit dismisses the prompt)
        #[arg(long, value_name = "PROGRAM")]
        askpass: Option<std::path::PathBuf>,
    },
    /// Show the daemon's version, the handsets and their link statistics
    #[command(after_help = "Example:\n  phonecsp status")]
    Status,

    /// List the configured handsets: connected or not, pinned key fingerprint
    #[command(after_help = "Example:\n  phonecsp handsets")]
    Handsets,

    /// List the tokens you may use on connected handsets
    #[command(
        after_help = "Examples:\n  phonecsp tokens\n  phonecsp --handset pixel --json tokens"
    )]
    Tokens,

    /// List the keys and certificates in a token
    #[command(after_help = "Example:\n  phonecsp objects ssh")]
    Objects {
        /// The token (container on the handset)
        token: String,
    },

    /// Sign a file with a key on the handset (logs in first)
    #[command(after_help = "\
The input is hashed on the computer; only the digest goes to the handset. With \
RSA-PKCS the input is the DigestInfo to sign, with RSA-PKCS-PSS the digest.

Examples:
  phonecsp sign ssh --key 01 --in message.txt --out message.sig
  phonecsp sign web --key 02 --mechanism SHA384-RSA-PKCS-PSS --salt-len 48 < doc.pdf > doc.sig")]
    Sign(SignArgs),

    /// Check a signature with the public key of a key on the handset
    #[command(after_help = "\
Exit status 0 if the signature is valid, 1 if it is not.

Example:
  phonecsp verify ssh --key 01 --signature message.sig --in message.txt")]
    Verify(VerifyArgs),

    /// Decrypt with a key on the handset (logs in first)
    #[command(
        after_help = "Example:\n  phonecsp decrypt disk --key 01 --in secret.bin --out secret.txt"
    )]
    Decrypt(CryptArgs),

    /// Encrypt to the public key of a key on the handset
    #[command(
        after_help = "Example:\n  phonecsp encrypt disk --key 01 --in secret.txt --out secret.bin"
    )]
    Encrypt(CryptArgs),

    /// Get random bytes from the handset's generator
    #[command(
        after_help = "Examples:\n  phonecsp random 32 --hex\n  phonecsp random 64 > seed.bin"
    )]
    Random {
        /// How many bytes
        length: u32,
        /// Print them in hex instead of raw
        #[arg(long)]
        hex: bool,
    },

    /// List the keys on the phones that are here, from the daemon's object tree
    #[command(
        after_help = "Each key is a D-Bus object (org.phonecsp.Key1) a desktop program can use \
directly; OBJECT is its path.\n\nExamples:\n  phonecsp keys\n  phonecsp --json keys"
    )]
    Keys,
    /// Generate a key pair on the handset (logs in first)
    #[command(
        after_help = "Examples:\n  phonecsp keygen ssh --bits 3072 --id 01 --label \"laptop ssh\"\n  \
phonecsp keygen ssh --type p256 --id 05 --label \"ecdsa key\"\n\n\
bookworm's OpenSSH (9.2) uses RSA and ECDSA keys on a token, not Ed25519 ones."
    )]
    Keygen {
        /// The token (container on the handset)
        token: String,
        /// Modulus size of an RSA key: 2048, 3072 or 4096
        #[arg(long, default_value_t = 2048, value_parser = parse_bits)]
        bits: u32,
        /// rsa2048, rsa3072, rsa4096, p256, p384 or ed25519 [default: RSA of --bits]
        #[arg(long = "type", value_name = "TYPE", value_parser = parse_key_type, conflicts_with = "bits")]
        key_type: Option<KeyType>,
        /// The CKA_ID in hex [default: chosen by the handset]
        #[arg(long, value_name = "HEX")]
        id: Option<Id>,
        /// The CKA_LABEL
        #[arg(long, value_name = "LABEL", default_value = "")]
        label: String,
    },

    /// Write out the public key of a key on the handset: PEM, DER or OpenSSH
    #[command(after_help = "\
PEM and DER are the SubjectPublicKeyInfo openssl reads; openssh is one line for \
authorized_keys.

Examples:
  phonecsp pubkey ssh --key 05 --format openssh >> ~/.ssh/authorized_keys
  phonecsp pubkey ssh --key 05 --out key.pem")]
    Pubkey(PubkeyArgs),

    /// Move a private key made elsewhere onto the phone
    #[command(after_help = "\
The file is an unencrypted private key: PKCS#8 (PEM `PRIVATE KEY`, as `openssl genpkey` \
writes, or DER), PKCS#1 (`RSA PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or OpenSSH \
(`ssh-keygen`); RSA of 2048, 3072 or 4096 bits, ECDSA P-256 or P-384, or Ed25519. \
An encrypted one is refused: decrypt it into a pipe, as in the example. \
The key goes to the phone inside the encrypted session and is written nowhere here; \
the phone records it as imported (CKA_LOCAL false), since it was once outside it, and \
copies of the file still work: destroy them if the phone is to be the key's only home.

Examples:
  phonecsp import ssh ~/.ssh/id_rsa --id 01 --label \"old laptop\"
  openssl pkey -in encrypted.pem | phonecsp import ssh - --id 02")]
    Import {
        /// The token (container on the handset)
        token: String,
        /// The private key file ("-" for stdin)
        file: String,
        /// The CKA_ID in hex [default: chosen by the handset]
        #[arg(long, value_name = "HEX")]
        id: Option<Id>,
        /// The CKA_LABEL
        #[arg(long, value_name = "LABEL", default_value = "")]
        label: String,
    },

    /// A phone's signed statement about one of its keys, or the check of one
    #[command(after_help = "\
The statement says which phone holds the key, in which token, its public key, whether it \
was generated on the phone or imported, and the token's approval policy, for a nonce \
chosen here; it is signed by the phone's attestation key, which this computer pins at the \
phone's first statement (see docs/attestation.md for what it proves and what it does not: \
it is the phone's software's word, with no hardware root of trust).

Examples:
  phonecsp attest ssh --key 01 --nonce 00112233445566778899aabbccddeeff --out key01.att
  phonecsp attest --verify key01.att --nonce 00112233445566778899aabbccddeeff")]
    Attest {
        /// The token (container on the handset); not with --verify
        #[arg(required_unless_present = "verify", conflicts_with = "verify")]
        token: Option<String>,
        /// The key's CKA_ID in hex
        #[arg(
            long,
            value_name = "HEX",
            required_unless_present = "verify",
            conflicts_with = "verify"
        )]
        key: Option<Id>,
        /// The nonce in hex, 16 to 64 bytes [default: 32 random bytes]; with --verify, the
        /// nonce the statement must answer
        #[arg(long, value_name = "HEX")]
        nonce: Option<Id>,
        /// Where to write the statement ("-" for stdout)
        #[arg(long, value_name = "FILE", default_value = "-")]
        out: String,
        /// Check the statement in FILE against the phones this computer paired with
        #[arg(long, value_name = "FILE")]
        verify: Option<String>,
    },

    /// Import, export or delete a certificate
    #[command(subcommand)]
    Cert(CertCommand),

    /// Manage a token's PIN
    #[command(subcommand)]
    Pin(PinCommand),

    /// Set a new PIN with the token's PUK, also when wrong PINs locked it
    #[command(after_help = "\
The PUK comes from PHONECSP_PUK and the new PIN from PHONECSP_NEW_PIN, else both are \
asked on the terminal (the new PIN twice). The PIN gets every try again. Ten wrong \
PUKs lock the PUK for good: nothing in the container can be used again.

Example:
  phonecsp unblock ssh")]
    Unblock {
        /// The token (container on the handset)
        token: String,
    },

    /// Change a token's PUK (the old one is the proof)
    #[command(after_help = "\
The current PUK comes from PHONECSP_PUK and the new one from PHONECSP_NEW_PUK, else \
both are asked on the terminal (the new one twice). A PUK is 8 or more digits.

Example:
  phonecsp change-puk ssh")]
    ChangePuk {
        /// The token (container on the handset)
        token: String,
    },

    /// Unlock LUKS disks with the handset: enrol, re-wrap, list
    #[command(subcommand)]
    Luks(crate::luks::LuksCommand),

    /// Pair with a handset by the one-time code it shows (root, or as polkit allows)
    #[command(after_help = "\
The code is taken from --code, else from PHONECSP_PAIRING_CODE, else asked on the \
terminal without echo. Prefer the last two: a command line is visible to other users. \
With --qr the code is made here and shown as a QR code for the phone to scan.

Example:
  sudo phonecsp --handset pixel pair")]
    Pair {
        /// The one-time pairing code shown on the phone: its eight digits
        /// (`phonecsp-handset pair --short`), or the long code
        #[arg(long, value_name = "CODE", conflicts_with = "qr")]
        code: Option<String>,
        /// Make the code here and show it as a QR code, for a phone that
        /// scans: the phone takes it with `phonecsp-handset pair --code`;
        /// then press Enter here
        #[arg(long)]
        qr: bool,
    },

    /// Forget a handset's pinned key (root, or as polkit allows)
    #[command(after_help = "\
The handset can be used again only after a new pairing, with a new code from the \
phone. At a terminal you are asked to type the handset's name; elsewhere give --yes.

Example:
  sudo phonecsp --handset pixel unpair")]
    Unpair {
        #[command(flatten)]
        yes: Yes,
    },

    /// Write shell completions or man pages, made from these definitions
    #[command(subcommand, hide = true)]
    Generate(GenerateCommand),
}

/// `--yes`, for the steps that cannot be undone.
#[derive(Args, Debug, Clone, Copy)]
pub(crate) struct Yes {
    /// Do it without asking (needed where there is no terminal to ask on)
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum GenerateCommand {
    /// Print the completion script for a shell
    #[command(
        after_help = "Example:\n  phonecsp generate completions bash > /usr/share/bash-completion/completions/phonecsp"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Write the man pages (phonecsp.1, phonecsp-sign.1, ...) into a directory
    #[command(after_help = "Example:\n  phonecsp generate man /usr/share/man/man1")]
    Man {
        /// The directory (made if missing)
        dir: std::path::PathBuf,
    },
}

impl Command {
    /// The token the command is about, if it names one on the command line.
    pub(crate) fn token(&self) -> Option<&str> {
        match self {
            Command::Objects { token }
            | Command::Keygen { token, .. }
            | Command::Import { token, .. }
            | Command::Pin(PinCommand::Change { token })
            | Command::Unblock { token }
            | Command::ChangePuk { token }
            | Command::Cert(
                CertCommand::Import { token, .. }
                | CertCommand::Export { token, .. }
                | CertCommand::SelfSign { token, .. }
                | CertCommand::Delete { token, .. },
            ) => Some(token),
            Command::Attest { token, .. } => token.as_deref(),
            Command::Sign(a) => Some(&a.key.token),
            Command::Pubkey(a) => Some(&a.key.token),
            Command::Verify(a) => Some(&a.key.token),
            Command::Decrypt(a) | Command::Encrypt(a) => Some(&a.key.token),
            Command::Luks(l) => l.token(),
            Command::Agent { .. }
            | Command::Keys
            | Command::Status
            | Command::Handsets
            | Command::Tokens
            | Command::Random { .. }
            | Command::Pair { .. }
            | Command::Unpair { .. }
            | Command::Generate(_) => None,
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum CertCommand {
    /// Store a certificate (PEM or DER) in a token (logs in first)
    #[command(after_help = "Example:\n  phonecsp cert import web --id 02 user.pem")]
    Import {
        /// The token (container on the handset)
        token: String,
        /// The CKA_ID in hex, usually that of the certificate's key
        #[arg(long, value_name = "HEX")]
        id: Id,
        /// The CKA_LABEL
        #[arg(long, value_name = "LABEL", default_value = "")]
        label: String,
        /// The certificate file, PEM or DER ("-" for stdin)
        file: String,
    },
    /// Write a certificate out, DER unless --pem
    #[command(after_help = "Example:\n  phonecsp cert export web --id 02 --pem --out user.pem")]
    Export {
        /// The token (container on the handset)
        token: String,
        /// The CKA_ID in hex
        #[arg(long, value_name = "HEX")]
        id: Id,
        /// Where to write it ("-" for stdout)
        #[arg(long, value_name = "FILE", default_value = "-")]
        out: String,
        /// PEM instead of DER
        #[arg(long)]
        pem: bool,
    },
    /// Have the handset sign a self-signed certificate for one of its keys,
    /// and store it next to the key (logs in first)
    #[command(
        name = "self-sign",
        after_help = "Example:\n  phonecsp cert self-sign ssh --id 01 --subject \"CN=alice's phone\" --days 365"
    )]
    SelfSign {
        /// The token (container on the handset)
        token: String,
        /// The key's CKA_ID in hex; the certificate gets the same
        #[arg(long, value_name = "HEX")]
        id: Id,
        /// The subject (and issuer), RFC 4514; default CN=<key label>
        #[arg(long, value_name = "DN")]
        subject: Option<String>,
        /// Days of validity from now
        #[arg(long, value_name = "N", default_value_t = 365)]
        days: u32,
    },
    /// Delete a certificate from a token (logs in first)
    #[command(after_help = "\
The certificate is gone for good. At a terminal you are asked first; elsewhere \
give --yes.

Example:
  phonecsp cert delete web --id 02")]
    Delete {
        /// The token (container on the handset)
        token: String,
        /// The CKA_ID in hex
        #[arg(long, value_name = "HEX")]
        id: Id,
        #[command(flatten)]
        yes: Yes,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PinCommand {
    /// Change a token's PIN
    #[command(after_help = "\
The current PIN comes from PHONECSP_PIN and the new one from PHONECSP_NEW_PIN, \
else both are asked on the terminal (the new one twice).

Example:
  phonecsp pin change ssh")]
    Change {
        /// The token (container on the handset)
        token: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct SignArgs {
    #[command(flatten)]
    pub(crate) key: KeyRef,
    #[command(flatten)]
    pub(crate) mech: SignMechanismArgs,
    /// The data to sign ("-" for stdin)
    #[arg(long = "in", value_name = "FILE", default_value = "-")]
    pub(crate) input: String,
    /// Where to write the signature ("-" for stdout)
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub(crate) out: String,
    /// Write an ECDSA signature in DER, as openssl and X.509 carry it,
    /// instead of PKCS#11's r||s
    #[arg(long)]
    pub(crate) der: bool,
}

#[derive(Args, Debug)]
pub(crate) struct PubkeyArgs {
    #[command(flatten)]
    pub(crate) key: KeyRef,
    /// pem, der or openssh
    #[arg(long, value_name = "FORMAT", default_value = "pem", value_parser = ["pem", "der", "openssh"])]
    pub(crate) format: String,
    /// Where to write it ("-" for stdout)
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub(crate) out: String,
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) key: KeyRef,
    /// The signature file
    #[arg(long, value_name = "FILE")]
    pub(crate) signature: String,
    #[command(flatten)]
    pub(crate) mech: SignMechanismArgs,
    /// The signed data ("-" for stdin)
    #[arg(long = "in", value_name = "FILE", default_value = "-")]
    pub(crate) input: String,
    /// The ECDSA signature is in DER (as `sign --der` and openssl write it)
    #[arg(long)]
    pub(crate) der: bool,
}

/// The key a command works with: its token and its id there.
#[derive(Args, Debug)]
pub(crate) struct KeyRef {
    /// The token (container on the handset)
    pub(crate) token: String,
    /// The key's CKA_ID in hex
    #[arg(long = "key", value_name = "ID_HEX")]
    pub(crate) id: Id,
}

#[derive(Args, Debug)]
pub(crate) struct SignMechanismArgs {
    /// SHA{1,224,256,384,512}-RSA-PKCS[-PSS], RSA-PKCS (input: a DigestInfo),
    /// RSA-PKCS-PSS (input: a digest), ECDSA-SHA{1,224,256,384,512}, ECDSA
    /// (input: a digest) or EDDSA [default: SHA256-RSA-PKCS for an RSA key,
    /// ECDSA-SHA256 for P-256, ECDSA-SHA384 for P-384, EDDSA for Ed25519]
    #[arg(long, value_name = "NAME")]
    pub(crate) mechanism: Option<String>,
    /// PSS salt length in bytes [default: the digest's length]
    #[arg(long, value_name = "N")]
    pub(crate) salt_len: Option<u32>,
    /// PSS hash, for RSA-PKCS-PSS [default: from the digest's length]
    #[arg(long, value_name = "HASH")]
    pub(crate) hash: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct CryptArgs {
    #[command(flatten)]
    pub(crate) key: KeyRef,
    /// RSA-PKCS-OAEP or RSA-PKCS
    #[arg(long, value_name = "NAME", default_value = "RSA-PKCS-OAEP")]
    pub(crate) mechanism: String,
    /// OAEP hash (and MGF1 hash): SHA1, SHA224, SHA256, SHA384 or SHA512
    #[arg(long, value_name = "HASH", default_value = "SHA256")]
    pub(crate) hash: String,
    /// The input ("-" for stdin)
    #[arg(long = "in", value_name = "FILE", default_value = "-")]
    pub(crate) input: String,
    /// Where to write the output ("-" for stdout)
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub(crate) out: String,
}

/// A key `keygen --type` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    Rsa(u32),
    Ec(phonecsp_protocol::Curve),
}

pub(crate) fn parse_key_type(s: &str) -> Result<KeyType, String> {
    let s = s.trim().to_ascii_lowercase();
    if let Some(bits) = s.strip_prefix("rsa") {
        return parse_bits(bits).map(KeyType::Rsa);
    }
    phonecsp_protocol::Curve::from_name(&s)
        .map(KeyType::Ec)
        .ok_or_else(|| "give rsa2048, rsa3072, rsa4096, p256, p384 or ed25519".into())
}

pub(crate) fn parse_bits(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(b @ (2048 | 3072 | 4096)) => Ok(b),
        _ => Err("the handset makes RSA keys of 2048, 3072 or 4096 bits".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ids_parse() {
        assert_eq!("0a1B".parse::<Id>(), Ok(Id(vec![0x0a, 0x1b])));
        assert_eq!("0a:1b".parse::<Id>(), Ok(Id(vec![0x0a, 0x1b])));
        assert_eq!("0x01".parse::<Id>(), Ok(Id(vec![1])));
        assert!("1".parse::<Id>().is_err());
        assert!("zz".parse::<Id>().is_err());
        assert!("".parse::<Id>().is_err());
        assert!("é1".parse::<Id>().is_err());
    }

    #[test]
    fn parses_global_options_and_subcommands() {
        let cli = Cli::try_parse_from([
            "phonecsp", "--bus", "session", "--json", "sign", "ssh", "--key", "01", "--in", "f",
        ])
        .expect("parses");
        assert_eq!(cli.bus, Some(Bus::Session));
        assert!(cli.json);
        let Command::Sign(a) = cli.command else {
            panic!("not sign")
        };
        // No mechanism given: the key's type decides (crypto.rs).
        assert_eq!(a.mech.mechanism, None);
        assert_eq!(a.out, "-");
        assert_eq!(a.key.id, Id(vec![1]));
        // Global options after the subcommand too.
        let cli =
            Cli::try_parse_from(["phonecsp", "tokens", "--handset", "pixel"]).expect("parses");
        assert_eq!(cli.handset.as_deref(), Some("pixel"));
        assert!(Cli::try_parse_from(["phonecsp", "keygen", "ssh", "--bits", "1024"]).is_err());
        assert!(Cli::try_parse_from(["phonecsp", "--bus", "nowhere", "status"]).is_err());
    }
}
