//! The object API (`dbus/org.phonecsp.{Handset1,Token1,Key1,AgentManager1}.xml`):
//! typed proxies for its interfaces, where its object paths come from
//! (shared with the daemon, so both always agree), and what a program
//! most often wants of it: every handset and key, read in one
//! `GetManagedObjects` call. docs/dbus-api.md describes the API.

use std::collections::HashMap;

use zbus::fdo::ObjectManagerProxy;
use zbus::proxy::CacheProperties;
use zbus::{OwnedObjectPath, OwnedVariant};

use crate::error::{Error, Result};
use crate::named::Options;
use crate::types::{BUS_NAME, LinkStatistics};

/// The object tree's root: the ObjectManager and the agent manager.
pub const ROOT: &str = "/org/phonecsp";
pub const HANDSET_INTERFACE: &str = "org.phonecsp.Handset1";
pub const TOKEN_INTERFACE: &str = "org.phonecsp.Token1";
pub const KEY_INTERFACE: &str = "org.phonecsp.Key1";

/// A name as one element of an object path: ASCII letters and digits
/// stay, every other byte becomes `_xx` (as systemd's bus paths do), so
/// distinct names give distinct paths.
pub fn path_element(name: &str) -> String {
    if name.is_empty() {
        return "_".to_owned();
    }
    name.bytes()
        .map(|b| match b.is_ascii_alphanumeric() {
            true => (b as char).to_string(),
            false => format!("_{b:02x}"),
        })
        .collect()
}

fn owned(path: String) -> OwnedObjectPath {
    // Every element comes from `path_element` or hex: always valid.
    OwnedObjectPath::try_from(path).unwrap_or_else(|_| {
        OwnedObjectPath::from(zbus::ObjectPath::from_static_str_unchecked(ROOT))
    })
}

pub fn handset_path(handset: &str) -> OwnedObjectPath {
    owned(format!("{ROOT}/handset/{}", path_element(handset)))
}

pub fn token_path(handset: &str, token: &str) -> OwnedObjectPath {
    owned(format!(
        "{}/{}",
        handset_path(handset).as_str(),
        path_element(token)
    ))
}

pub fn key_path(handset: &str, token: &str, id: &[u8]) -> OwnedObjectPath {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    owned(format!("{}/key_{hex}", token_path(handset, token).as_str()))
}

#[zbus::proxy(
    interface = "org.phonecsp.Handset1",
    default_service = "org.phonecsp.CryptoProvider1"
)]
pub trait Handset1 {
    fn pair(&self, code: &str) -> Result<String>;
    fn unpair(&self) -> Result<()>;
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property(emits_changed_signal = "const"))]
    fn transport(&self) -> zbus::Result<String>;
    #[zbus(property(emits_changed_signal = "invalidates"))]
    fn fingerprint(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn connected(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn paired(&self) -> zbus::Result<bool>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn statistics(&self) -> zbus::Result<LinkStatistics>;
}

#[zbus::proxy(
    interface = "org.phonecsp.Token1",
    default_service = "org.phonecsp.CryptoProvider1"
)]
pub trait Token1 {
    fn login(&self, pin: &[u8]) -> Result<()>;
    fn logout(&self) -> Result<()>;
    fn change_pin(&self, old_pin: &[u8], new_pin: &[u8]) -> Result<()>;
    fn unblock(&self, puk: &[u8], new_pin: &[u8]) -> Result<()>;
    fn change_puk(&self, old_puk: &[u8], new_puk: &[u8]) -> Result<()>;
    fn generate_key(&self, kind: &str, options: &Options) -> Result<OwnedObjectPath>;
    #[zbus(property(emits_changed_signal = "const"))]
    fn handset(&self) -> zbus::Result<OwnedObjectPath>;
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn present(&self) -> zbus::Result<bool>;
    #[zbus(property(emits_changed_signal = "false"))]
    fn logged_in(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn pin_flags(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn retries_left(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn puk_retries_left(&self) -> zbus::Result<u32>;
}

#[zbus::proxy(
    interface = "org.phonecsp.Key1",
    default_service = "org.phonecsp.CryptoProvider1"
)]
pub trait Key1 {
    fn sign(&self, mechanism: &str, options: &Options, data: &[u8]) -> Result<Vec<u8>>;
    fn verify(
        &self,
        mechanism: &str,
        options: &Options,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool>;
    fn decrypt(&self, mechanism: &str, options: &Options, ciphertext: &[u8]) -> Result<Vec<u8>>;
    fn encrypt(&self, mechanism: &str, options: &Options, plaintext: &[u8]) -> Result<Vec<u8>>;
    fn delete(&self) -> Result<()>;
}

#[zbus::proxy(
    interface = "org.phonecsp.AgentManager1",
    default_service = "org.phonecsp.CryptoProvider1",
    default_path = "/org/phonecsp"
)]
pub trait AgentManager1 {
    fn register_agent(&self, agent: &zbus::ObjectPath<'_>) -> Result<()>;
    fn unregister_agent(&self, agent: &zbus::ObjectPath<'_>) -> Result<()>;
}

/// A handset as its object shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandsetInfo {
    pub path: OwnedObjectPath,
    pub name: String,
    pub connected: bool,
    pub paired: bool,
    /// Empty unless the caller administers the daemon.
    pub transport: String,
    /// Empty before pairing, and unless the caller administers the daemon.
    pub fingerprint: String,
}

/// A key as its object shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub path: OwnedObjectPath,
    /// The handset's and the token's names (from their objects).
    pub handset: String,
    pub token_name: String,
    pub token: OwnedObjectPath,
    pub id: Vec<u8>,
    pub label: String,
    /// "rsa".
    pub kind: String,
    pub bits: u32,
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// DER X.509; empty if none.
    pub certificate: Vec<u8>,
}

/// Every object's interfaces and properties.
type Tree = HashMap<OwnedObjectPath, HashMap<String, HashMap<String, OwnedVariant>>>;

/// The whole tree, in one call.
async fn tree(conn: &zbus::Connection) -> Result<Tree> {
    let manager = ObjectManagerProxy::builder(conn)
        .destination(BUS_NAME)
        .path(ROOT)
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    Ok(manager
        .get_managed_objects()
        .await?
        .into_iter()
        .map(|(path, ifaces)| {
            let ifaces = ifaces
                .into_iter()
                .map(|(name, props)| (name.to_string(), props))
                .collect();
            (path, ifaces)
        })
        .collect())
}

/// Reads one property of the type its interface gives it.
fn get<T>(props: &HashMap<String, OwnedVariant>, name: &str) -> Result<T>
where
    T: TryFrom<OwnedVariant>,
{
    let bad = || {
        Error::Bus(zbus::Error::Failure(format!(
            "the daemon's object tree has no property {name} of the documented type"
        )))
    };
    let value = props.get(name).ok_or_else(bad)?;
    T::try_from(value.try_clone().map_err(|_| bad())?).map_err(|_| bad())
}

/// The objects of `interface` in `tree`, sorted by path.
fn objects_of(
    tree: &Tree,
    interface: &str,
) -> Vec<(OwnedObjectPath, HashMap<String, OwnedVariant>)> {
    let mut found: Vec<_> = tree
        .iter()
        .filter_map(|(path, ifaces)| {
            let props = ifaces.get(interface)?;
            let props = props
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.try_clone().ok()?)))
                .collect();
            Some((path.clone(), props))
        })
        .collect();
    found.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    found
}

/// The `Name` of the object at `path` with `interface`.
fn name_at(tree: &Tree, path: &OwnedObjectPath, interface: &str) -> Result<String> {
    let props = tree
        .get(path)
        .and_then(|i| i.get(interface))
        .ok_or_else(|| Error::Bus(zbus::Error::Failure(format!("no object {path}"))))?;
    get(props, "Name")
}

fn handset_info(path: OwnedObjectPath, p: &HashMap<String, OwnedVariant>) -> Result<HandsetInfo> {
    Ok(HandsetInfo {
        name: get(p, "Name")?,
        connected: get(p, "Connected")?,
        paired: get(p, "Paired")?,
        transport: get(p, "Transport")?,
        fingerprint: get(p, "Fingerprint")?,
        path,
    })
}

/// Every configured handset.
pub async fn handsets(conn: &zbus::Connection) -> Result<Vec<HandsetInfo>> {
    let tree = tree(conn).await?;
    let found = objects_of(&tree, HANDSET_INTERFACE);
    found
        .into_iter()
        .map(|(path, p)| handset_info(path, &p))
        .collect()
}

/// Every key on the phones that are here.
pub async fn keys(conn: &zbus::Connection) -> Result<Vec<KeyInfo>> {
    let tree = tree(conn).await?;
    objects_of(&tree, KEY_INTERFACE)
        .into_iter()
        .map(|(path, p)| {
            let token: OwnedObjectPath = get(&p, "Token")?;
            let token_props = tree.get(&token).and_then(|i| i.get(TOKEN_INTERFACE));
            let handset: OwnedObjectPath = match token_props {
                Some(t) => get(t, "Handset")?,
                None => {
                    return Err(Error::Bus(zbus::Error::Failure(format!(
                        "no object {token}"
                    ))));
                }
            };
            Ok(KeyInfo {
                handset: name_at(&tree, &handset, HANDSET_INTERFACE)?,
                token_name: name_at(&tree, &token, TOKEN_INTERFACE)?,
                token,
                id: get(&p, "Id")?,
                label: get(&p, "Label")?,
                kind: get(&p, "Type")?,
                bits: get(&p, "Bits")?,
                public_key: get(&p, "PublicKey")?,
                certificate: get(&p, "Certificate")?,
                path,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_distinct_valid_path_elements() {
        let names = ["ssh", "disk-2", "disk_2", "", "é", "a b", "_2d"];
        let paths: std::collections::BTreeSet<String> = names
            .iter()
            .map(|n| token_path("phone", n).as_str().to_owned())
            .collect();
        assert_eq!(paths.len(), names.len());
        assert_eq!(
            token_path("phone", "disk-2").as_str(),
            "/org/phonecsp/handset/phone/disk_2d2"
        );
        assert_eq!(
            key_path("phone", "ssh", &[0x01, 0xab]).as_str(),
            "/org/phonecsp/handset/phone/ssh/key_01ab"
        );
    }
}
