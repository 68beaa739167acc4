//! The `org.phonecsp.CryptoProvider1` D-Bus service.
//!
//! Every method finds the caller's uid from the bus (never from its
//! arguments), checks the token's allow list, validates every argument, and
//! only then, if the handset is needed at all, queues a request on the
//! handset's link. Hashing, verification and encryption happen here. Login
//! state belongs to the calling connection and to the link's current
//! session: it is dropped when the caller leaves the bus or the session ends.

use crate::config::{AccessList, Config};
use crate::link::{LinkHandle, LinkState};
use crate::state::State;
use phonecsp::input::SignInput;
use phonecsp::local;
use phonecsp::mechanism::{self, Encryption, Signing};
use phonecsp::{
    Error, HandsetStatus, KeyPairInfo, LinkStatistics, MechanismParams, ObjectInfo, TokenDetails,
    TokenEntry,
};
use phonecsp_protocol::ck::cka;
use phonecsp_protocol::message::{
    MAX_DER_LEN, MAX_ID_LEN, MAX_NAME_LEN, MAX_PIN_LEN, MAX_RANDOM_LEN,
};
use phonecsp_protocol::noise::fingerprint;
use phonecsp_protocol::{CkRv, HashAlg, ObjectClass, PairingCode, Reply, Request};
use rsa::RsaPublicKey;
use rsa::traits::PublicKeyParts;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};
use zeroize::Zeroizing;

/// Largest message hashed here for a signature or digest.
pub const MAX_HASHED_INPUT: usize = 64 << 20;
/// Largest random request (served in handset-sized pieces).
pub const MAX_RANDOM: u32 = 64 * 1024;
pub const KEY_SIZES: [u32; 3] = [2048, 3072, 4096];

type Result<T> = std::result::Result<T, Error>;

/// Who is calling, as the bus says.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub uid: u32,
    pub gids: Vec<u32>,
}

/// An allow list with names resolved to ids.
#[derive(Debug, Clone, Default)]
struct Allowed {
    uids: HashSet<u32>,
    gids: HashSet<u32>,
}

impl Allowed {
    fn resolve(list: &AccessList) -> Allowed {
        let mut a = Allowed::default();
        for u in &list.users {
            match u.parse::<u32>() {
                Ok(n) => {
                    a.uids.insert(n);
                }
                Err(_) => match nix::unistd::User::from_name(u) {
                    Ok(Some(user)) => {
                        a.uids.insert(user.uid.as_raw());
                    }
                    _ => log::warn!("allow list: no user '{u}'"),
                },
            }
        }
        for g in &list.groups {
            match g.parse::<u32>() {
                Ok(n) => {
                    a.gids.insert(n);
                }
                Err(_) => match nix::unistd::Group::from_name(g) {
                    Ok(Some(group)) => {
                        a.gids.insert(group.gid.as_raw());
                    }
                    _ => log::warn!("allow list: no group '{g}'"),
                },
            }
        }
        a
    }

    fn permits(&self, c: &Caller) -> bool {
        self.uids.contains(&c.uid) || c.gids.iter().any(|g| self.gids.contains(g))
    }
}

#[derive(Debug, Clone)]
struct KeyInfo {
    id: Vec<u8>,
    public: RsaPublicKey,
}

/// What the daemon knows of a token's objects, for the session it was read in.
#[derive(Debug, Clone)]
struct TokenCache {
    generation: u64,
    objects: Vec<ObjectInfo>,
    keys: Vec<KeyInfo>,
}

pub struct Provider {
    inner: Arc<Inner>,
}

pub struct Inner {
    config: Config,
    links: BTreeMap<String, LinkHandle>,
    transports: BTreeMap<String, String>,
    state: Arc<State>,
    own_uid: u32,
    default_allowed: Allowed,
    token_allowed: Vec<(Option<String>, String, Allowed)>,
    callers: Mutex<HashMap<String, Caller>>,
    /// (caller, handset, token) -> the session generation it logged in to.
    logins: Mutex<HashMap<(String, String, String), u64>>,
    cache: Mutex<HashMap<(String, String), TokenCache>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent
    // (single inserts and removes), so poisoning is not fatal.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ck(rv: CkRv, detail: impl std::fmt::Display) -> Error {
    Error::token(rv, detail)
}

fn check_name(what: &str, s: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > MAX_NAME_LEN
        || s.chars().any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(ck(CkRv::ARGUMENTS_BAD, format!("invalid {what} name")));
    }
    Ok(())
}

fn check_id(id: &[u8]) -> Result<()> {
    if id.len() > MAX_ID_LEN {
        return Err(ck(
            CkRv::ARGUMENTS_BAD,
            format!("key id longer than {MAX_ID_LEN} bytes"),
        ));
    }
    Ok(())
}

impl Inner {
    pub fn new(config: Config, links: BTreeMap<String, LinkHandle>, state: Arc<State>) -> Inner {
        let transports = config
            .handsets
            .iter()
            .map(|h| {
                let t = h.transport().map(|t| t.to_string()).unwrap_or_default();
                (h.name.clone(), t)
            })
            .collect();
        let default_allowed = Allowed::resolve(&config.access);
        let token_allowed = config
            .tokens
            .iter()
            .map(|t| {
                (
                    t.handset.clone(),
                    t.name.clone(),
                    Allowed::resolve(&t.allow),
                )
            })
            .collect();
        Inner {
            config,
            links,
            transports,
            state,
            own_uid: nix::unistd::getuid().as_raw(),
            default_allowed,
            token_allowed,
            callers: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn links(&self) -> &BTreeMap<String, LinkHandle> {
        &self.links
    }

    async fn caller(&self, hdr: &Header<'_>, conn: &Connection) -> Result<Caller> {
        let sender = hdr
            .sender()
            .ok_or_else(|| ck(CkRv::ARGUMENTS_BAD, "message without sender"))?
            .to_string();
        if let Some(c) = lock(&self.callers).get(&sender) {
            return Ok(c.clone());
        }
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let name = zbus::names::BusName::try_from(sender.as_str()).map_err(Error::Bus)?;
        let creds = dbus.get_connection_credentials(name).await?;
        let uid = creds
            .unix_user_id()
            .ok_or_else(|| ck(CkRv::GENERAL_ERROR, "the bus did not tell the caller's uid"))?;
        let gids = match creds.unix_group_ids() {
            Some(g) => g.clone(),
            None => groups_of(uid),
        };
        let c = Caller {
            name: sender.clone(),
            uid,
            gids,
        };
        lock(&self.callers).insert(sender, c.clone());
        Ok(c)
    }

    /// The caller left the bus: forget it and its logins, logging out on
    /// the handset where nobody else is logged in.
    pub async fn caller_left(&self, name: &str) {
        lock(&self.callers).remove(name);
        let dropped: Vec<(String, String, u64)> = {
            let mut logins = lock(&self.logins);
            let keys: Vec<_> = logins.keys().filter(|k| k.0 == name).cloned().collect();
            keys.into_iter()
                .filter_map(|k| logins.remove(&k).map(|g| (k.1, k.2, g)))
                .collect()
        };
        for (handset, token, generation) in dropped {
            log::debug!("caller {name} left; its login to {handset}/{token} is dropped");
            self.logout_if_unused(&handset, &token, generation).await;
        }
    }

    /// Logs the handset session out of `token` unless a caller is logged
    /// in to it in that session.
    pub(crate) async fn logout_if_unused(&self, handset: &str, token: &str, generation: u64) {
        let still_used = lock(&self.logins)
            .iter()
            .any(|(k, g)| k.1 == handset && k.2 == token && *g == generation);
        let Some(link) = self.links.get(handset) else {
            return;
        };
        if !still_used && link.state() == (LinkState::Connected { generation }) {
            let _ = link
                .call(
                    "phonecspd",
                    Request::Logout {
                        container: token.to_owned(),
                    },
                )
                .await;
        }
    }

    fn link(&self, handset: &str) -> Result<&LinkHandle> {
        self.links.get(handset).ok_or_else(|| {
            ck(
                CkRv::TOKEN_NOT_PRESENT,
                format!("no handset '{handset}' is configured"),
            )
        })
    }

    fn generation(link: &LinkHandle) -> Option<u64> {
        match link.state() {
            LinkState::Connected { generation } => Some(generation),
            _ => None,
        }
    }

    fn allowed(&self, c: &Caller, handset: &str, token: &str) -> bool {
        if c.uid == 0 {
            return true;
        }
        let specific = self
            .token_allowed
            .iter()
            .find(|(h, t, _)| t == token && h.as_deref() == Some(handset))
            .or_else(|| {
                self.token_allowed
                    .iter()
                    .find(|(h, t, _)| t == token && h.is_none())
            });
        match specific {
            Some((_, _, a)) => a.permits(c),
            None => self.default_allowed.permits(c),
        }
    }

    /// The link to `handset`, if the caller may use `token` on it. A token
    /// the caller may not use looks like one that is not there.
    fn token_link(&self, c: &Caller, handset: &str, token: &str) -> Result<&LinkHandle> {
        check_name("handset", handset)?;
        check_name("token", token)?;
        let link = self.link(handset)?;
        if !self.allowed(c, handset, token) {
            log::info!("uid {} refused token {handset}/{token}", c.uid);
            return Err(ck(
                CkRv::TOKEN_NOT_PRESENT,
                format!("token '{token}' is not available to uid {}", c.uid),
            ));
        }
        Ok(link)
    }

    fn is_admin(&self, c: &Caller) -> bool {
        c.uid == 0 || c.uid == self.own_uid
    }

    fn logged_in(&self, c: &Caller, link: &LinkHandle, token: &str) -> bool {
        let key = (c.name.clone(), link.name().to_owned(), token.to_owned());
        let current = Self::generation(link);
        lock(&self.logins)
            .get(&key)
            .is_some_and(|g| Some(*g) == current)
    }

    fn require_login(&self, c: &Caller, link: &LinkHandle, token: &str) -> Result<()> {
        if Self::generation(link).is_none() {
            // Say why plainly rather than "not logged in".
            return Err(ck(
                CkRv::DEVICE_REMOVED,
                format!("handset '{}' is away", link.name()),
            ));
        }
        if !self.logged_in(c, link, token) {
            return Err(ck(
                CkRv::USER_NOT_LOGGED_IN,
                format!("log in to '{token}' first"),
            ));
        }
        Ok(())
    }

    async fn call(&self, c: &Caller, link: &LinkHandle, request: Request) -> Result<Reply> {
        link.call(&c.name, request).await
    }

    fn invalidate(&self, handset: &str, token: &str) {
        lock(&self.cache).remove(&(handset.to_owned(), token.to_owned()));
    }

    /// The token's objects and public keys, read once per session.
    async fn token_cache(&self, c: &Caller, link: &LinkHandle, token: &str) -> Result<TokenCache> {
        let generation = Self::generation(link).ok_or_else(|| {
            ck(
                CkRv::DEVICE_REMOVED,
                format!("handset '{}' is away", link.name()),
            )
        })?;
        let key = (link.name().to_owned(), token.to_owned());
        if let Some(tc) = lock(&self.cache).get(&key)
            && tc.generation == generation
        {
            return Ok(tc.clone());
        }
        let reply = self
            .call(
                c,
                link,
                Request::FindObjects {
                    container: token.to_owned(),
                    class: None,
                    id: None,
                    label: None,
                },
            )
            .await?;
        let Reply::Objects(list) = reply else {
            return Err(ck(CkRv::DEVICE_ERROR, "unexpected reply to +CKFIND"));
        };
        let mut keys = Vec::new();
        for o in list.iter().filter(|o| o.class == ObjectClass::PublicKey) {
            let reply = self
                .call(
                    c,
                    link,
                    Request::GetAttributes {
                        container: token.to_owned(),
                        class: ObjectClass::PublicKey,
                        id: o.id.clone(),
                    },
                )
                .await?;
            let Reply::Attributes(attrs) = reply else {
                return Err(ck(CkRv::DEVICE_ERROR, "unexpected reply to +CKATTR"));
            };
            let get = |t| {
                attrs
                    .iter()
                    .find(|(a, _)| *a == t)
                    .map(|(_, v)| v.as_slice())
            };
            if let (Some(n), Some(e)) = (get(cka::MODULUS), get(cka::PUBLIC_EXPONENT)) {
                keys.push(KeyInfo {
                    id: o.id.clone(),
                    public: local::public_key(n, e)?,
                });
            }
        }
        let tc = TokenCache {
            generation,
            objects: list
                .into_iter()
                .map(|o| ObjectInfo {
                    class: o.class.value() as u32,
                    id: o.id,
                    label: o.label,
                })
                .collect(),
            keys,
        };
        lock(&self.cache).insert(key, tc.clone());
        Ok(tc)
    }

    async fn key(
        &self,
        c: &Caller,
        link: &LinkHandle,
        token: &str,
        id: &[u8],
    ) -> Result<RsaPublicKey> {
        check_id(id)?;
        let tc = self.token_cache(c, link, token).await?;
        tc.keys
            .into_iter()
            .find(|k| k.id == id)
            .map(|k| k.public)
            .ok_or_else(|| {
                ck(
                    CkRv::KEY_HANDLE_INVALID,
                    format!("no key with that id in '{token}'"),
                )
            })
    }
}

fn groups_of(uid: u32) -> Vec<u32> {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return vec![user.gid.as_raw()];
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![user.gid.as_raw()])
}

impl Provider {
    pub fn new(inner: Arc<Inner>) -> Provider {
        Provider { inner }
    }
}

#[interface(name = "org.phonecsp.CryptoProvider1")]
impl Provider {
    #[zbus(out_args("handsets"))]
    async fn list_handsets(&self) -> Result<Vec<HandsetStatus>> {
        let i = &self.inner;
        Ok(i.links
            .values()
            .map(|l| HandsetStatus {
                name: l.name().to_owned(),
                transport: i.transports.get(l.name()).cloned().unwrap_or_default(),
                fingerprint: i
                    .state
                    .pinned(l.name())
                    .ok()
                    .flatten()
                    .map(|k| fingerprint(&k))
                    .unwrap_or_default(),
                connected: matches!(l.state(), LinkState::Connected { .. }),
            })
            .collect())
    }

    #[zbus(out_args("tokens"))]
    async fn list_tokens(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<TokenEntry>> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let mut out = Vec::new();
        for link in i.links.values() {
            if Inner::generation(link).is_none() {
                continue;
            }
            let reply = match i.call(&c, link, Request::ListContainers).await {
                Ok(r) => r,
                Err(e) => {
                    log::debug!("listing tokens of '{}': {e}", link.name());
                    continue;
                }
            };
            if let Reply::Containers(list) = reply {
                for t in list {
                    if i.allowed(&c, link.name(), &t.name) {
                        out.push(TokenEntry {
                            handset: link.name().to_owned(),
                            token: t.name,
                            flags: t.flags,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    #[zbus(out_args("info"))]
    async fn get_token_info(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
        token: String,
    ) -> Result<TokenDetails> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        match i
            .call(
                &c,
                link,
                Request::TokenInfo {
                    container: token.clone(),
                },
            )
            .await?
        {
            Reply::TokenInfo(t) => Ok(TokenDetails {
                handset,
                token,
                serial: t.serial,
                flags: t.flags,
                retries_left: t.retries_left,
                min_pin: t.min_pin,
                max_pin: t.max_pin,
                logged_in: i.logged_in(&c, link, &t.name),
            }),
            _ => Err(ck(CkRv::DEVICE_ERROR, "unexpected reply to +CKTINFO")),
        }
    }

    async fn login(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
        token: String,
        pin: Vec<u8>,
    ) -> Result<()> {
        let pin = Zeroizing::new(pin);
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        // An empty PIN asks the owner to type it on the phone, where the
        // token has a protected authentication path; the handset decides.
        if pin.len() > MAX_PIN_LEN {
            return Err(ck(
                CkRv::PIN_LEN_RANGE,
                format!("a PIN has at most {MAX_PIN_LEN} bytes"),
            ));
        }
        let generation = Inner::generation(link)
            .ok_or_else(|| ck(CkRv::DEVICE_REMOVED, format!("handset '{handset}' is away")))?;
        i.call(
            &c,
            link,
            Request::Login {
                container: token.clone(),
                pin: Zeroizing::new(pin.to_vec()),
            },
        )
        .await?;
        lock(&i.logins).insert((c.name.clone(), handset, token), generation);
        Ok(())
    }

    async fn logout(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
        token: String,
    ) -> Result<()> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        i.token_link(&c, &handset, &token)?;
        let removed = lock(&i.logins).remove(&(c.name.clone(), handset.clone(), token.clone()));
        match removed {
            Some(generation) => {
                i.logout_if_unused(&handset, &token, generation).await;
                Ok(())
            }
            None => Err(ck(CkRv::USER_NOT_LOGGED_IN, "not logged in")),
        }
    }

    async fn change_pin(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
        token: String,
        old_pin: Vec<u8>,
        new_pin: Vec<u8>,
    ) -> Result<()> {
        let (old_pin, new_pin) = (Zeroizing::new(old_pin), Zeroizing::new(new_pin));
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        if old_pin.len() > MAX_PIN_LEN || new_pin.is_empty() || new_pin.len() > MAX_PIN_LEN {
            return Err(ck(
                CkRv::PIN_LEN_RANGE,
                format!("a PIN has 1 to {MAX_PIN_LEN} bytes"),
            ));
        }
        i.call(
            &c,
            link,
            Request::ChangePin {
                container: token.clone(),
                old: Zeroizing::new(old_pin.to_vec()),
                new: Zeroizing::new(new_pin.to_vec()),
            },
        )
        .await?;
        // The handset dropped every session's login to the token.
        lock(&i.logins).retain(|k, _| !(k.1 == handset && k.2 == token));
        Ok(())
    }

    #[zbus(out_args("objects"))]
    async fn list_objects(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
        token: String,
    ) -> Result<Vec<ObjectInfo>> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        Ok(i.token_cache(&c, link, &token).await?.objects)
    }

    #[zbus(out_args("attributes"))]
    async fn get_attributes(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
        token: String,
        class: u32,
        id: Vec<u8>,
    ) -> Result<HashMap<u32, Vec<u8>>> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        check_id(&id)?;
        let class = ObjectClass::from_value(u64::from(class))
            .ok_or_else(|| ck(CkRv::ARGUMENTS_BAD, "unknown object class"))?;
        match i
            .call(
                &c,
                link,
                Request::GetAttributes {
                    container: token,
                    class,
                    id,
                },
            )
            .await?
        {
            Reply::Attributes(a) => Ok(a.into_iter().collect()),
            _ => Err(ck(CkRv::DEVICE_ERROR, "unexpected reply to +CKATTR")),
        }
    }

    #[zbus(out_args("signature"))]
    #[allow(clippy::too_many_arguments)]
    async fn sign(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
        token: String,
        key_id: Vec<u8>,
        mechanism: u32,
        params: MechanismParams,
        data: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        let signing = Signing::from_ckm(mechanism, &params)?;
        if data.len() > MAX_HASHED_INPUT {
            return Err(ck(CkRv::DATA_LEN_RANGE, "data too long"));
        }
        i.require_login(&c, link, &token)?;
        let key = i.key(&c, link, &token, &key_id).await?;
        let input = SignInput::once(signing, key.size(), &data)?;
        match i
            .call(
                &c,
                link,
                Request::Sign {
                    container: token,
                    id: key_id,
                    mechanism: input.mechanism,
                    data: input.data,
                },
            )
            .await?
        {
            Reply::Signature(s) => Ok(s),
            _ => Err(ck(CkRv::DEVICE_ERROR, "unexpected reply to +CKSIGN")),
        }
    }

    #[zbus(out_args("valid"))]
    #[allow(clippy::too_many_arguments)]
    async fn verify(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
        token: String,
        key_id: Vec<u8>,
        mechanism: u32,
        params: MechanismParams,
        data: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<bool> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        let signing = Signing::from_ckm(mechanism, &params)?;
        if data.len() > MAX_HASHED_INPUT {
            return Err(ck(CkRv::DATA_LEN_RANGE, "data too long"));
        }
        let key = i.key(&c, link, &token, &key_id).await?;
        Ok(local::verify(&key, &signing, &data, &signature)?)
    }

    #[zbus(out_args("plaintext"))]
    #[allow(clippy::too_many_arguments)]
    async fn decrypt(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
        token: String,
        key_id: Vec<u8>,
        mechanism: u32,
        params: MechanismParams,
        ciphertext: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        let enc = Encryption::from_ckm(mechanism, &params)?;
        i.require_login(&c, link, &token)?;
        let key = i.key(&c, link, &token, &key_id).await?;
        enc.check_ciphertext(ciphertext.len(), key.size())?;
        match i
            .call(
                &c,
                link,
                Request::Decrypt {
                    container: token,
                    id: key_id,
                    mechanism: enc.for_handset(),
                    data: ciphertext,
                },
            )
            .await?
        {
            // zbus needs an owned Vec to send; it is the caller's plaintext.
            Reply::Plaintext(p) => Ok(p.to_vec()),
            _ => Err(ck(CkRv::DEVICE_ERROR, "unexpected reply to +CKDEC")),
        }
    }

    #[zbus(out_args("ciphertext"))]
    #[allow(clippy::too_many_arguments)]
    async fn encrypt(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
        token: String,
        key_id: Vec<u8>,
        mechanism: u32,
        params: MechanismParams,
        plaintext: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let plaintext = Zeroizing::new(plaintext);
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        let enc = Encryption::from_ckm(mechanism, &params)?;
        let key = i.key(&c, link, &token, &key_id).await?;
        Ok(local::encrypt(&key, &enc, &plaintext)?)
    }

    #[zbus(out_args("digest"))]
    async fn digest(&self, mechanism: u32, data: Vec<u8>) -> Result<Vec<u8>> {
        let hash = mechanism::digest_alg(mechanism)
            .ok_or_else(|| ck(CkRv::MECHANISM_INVALID, "not a digest mechanism"))?;
        if data.len() > MAX_HASHED_INPUT {
            return Err(ck(CkRv::DATA_LEN_RANGE, "data too long"));
        }
        Ok(phonecsp::hash::digest(hash, &data))
    }

    #[zbus(out_args("key"))]
    #[allow(clippy::too_many_arguments)]
    async fn generate_key_pair(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        handset: String,
        token: String,
        bits: u32,
        id: Vec<u8>,
        label: String,
    ) -> Result<KeyPairInfo> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        if !KEY_SIZES.contains(&bits) {
            return Err(ck(
                CkRv::KEY_SIZE_RANGE,
                "RSA keys are 2048, 3072 or 4096 bits",
            ));
        }
        check_id(&id)?;
        if label.len() > MAX_NAME_LEN
            || label
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(ck(CkRv::ATTRIBUTE_VALUE_INVALID, "invalid label"));
        }
        i.require_login(&c, link, &token)?;
        let r = i
            .call(
                &c,
                link,
                Request::GenerateKeyPair {
                    container: token.clone(),
                    bits,
                    id,
                    label,
                },
            )
            .await?;
        i.invalidate(&handset, &token);
        let _ = Self::tokens_changed(&emitter, &handset).await;
        match r {
            Reply::KeyPair {
                id,
                modulus,
                exponent,
            } => Ok(KeyPairInfo {
                id,
                modulus,
                exponent,
            }),
            _ => Err(ck(CkRv::DEVICE_ERROR, "unexpected reply to +CKGEN")),
        }
    }

    #[zbus(out_args("random"))]
    async fn generate_random(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
        length: u32,
    ) -> Result<Vec<u8>> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        check_name("handset", &handset)?;
        let link = i.link(&handset)?;
        if length == 0 || length > MAX_RANDOM {
            return Err(ck(
                CkRv::ARGUMENTS_BAD,
                format!("length must be 1 to {MAX_RANDOM}"),
            ));
        }
        let mut out = Vec::with_capacity(length as usize);
        while out.len() < length as usize {
            let len = (length - out.len() as u32).min(MAX_RANDOM_LEN);
            match i.call(&c, link, Request::GenerateRandom { len }).await? {
                Reply::Random(r) if r.len() == len as usize => out.extend(r),
                _ => return Err(ck(CkRv::DEVICE_ERROR, "unexpected reply to +CKRAND")),
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn import_certificate(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        handset: String,
        token: String,
        id: Vec<u8>,
        label: String,
        certificate: Vec<u8>,
    ) -> Result<()> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        check_id(&id)?;
        if label.len() > MAX_NAME_LEN
            || label
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(ck(CkRv::ATTRIBUTE_VALUE_INVALID, "invalid label"));
        }
        if certificate.is_empty() || certificate.len() > MAX_DER_LEN || certificate[0] != 0x30 {
            return Err(ck(CkRv::ATTRIBUTE_VALUE_INVALID, "not a DER certificate"));
        }
        i.require_login(&c, link, &token)?;
        i.call(
            &c,
            link,
            Request::PutCertificate {
                container: token.clone(),
                id,
                label,
                der: certificate,
            },
        )
        .await?;
        i.invalidate(&handset, &token);
        let _ = Self::tokens_changed(&emitter, &handset).await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn delete_object(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        handset: String,
        token: String,
        class: u32,
        id: Vec<u8>,
    ) -> Result<()> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        check_id(&id)?;
        let request = match ObjectClass::from_value(u64::from(class)) {
            Some(ObjectClass::Certificate) => Request::DeleteCertificate {
                container: token.clone(),
                id,
            },
            Some(ObjectClass::PrivateKey | ObjectClass::PublicKey) => Request::DestroyKey {
                container: token.clone(),
                id,
            },
            None => return Err(ck(CkRv::ARGUMENTS_BAD, "unknown object class")),
        };
        i.require_login(&c, link, &token)?;
        i.call(&c, link, request).await?;
        i.invalidate(&handset, &token);
        let _ = Self::tokens_changed(&emitter, &handset).await;
        Ok(())
    }

    #[zbus(out_args("rewrapped"))]
    #[allow(clippy::too_many_arguments)]
    async fn rewrap(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
        token: String,
        key_id: Vec<u8>,
        in_hash: u32,
        ciphertext: Vec<u8>,
        out_hash: u32,
        public_key: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        let link = i.token_link(&c, &handset, &token)?;
        let hash = |v: u32| {
            HashAlg::from_mechanism(u64::from(v))
                .ok_or_else(|| ck(CkRv::MECHANISM_PARAM_INVALID, "unknown OAEP hash"))
        };
        let (in_hash, out_hash) = (hash(in_hash)?, hash(out_hash)?);
        if public_key.is_empty() || public_key.len() > MAX_DER_LEN {
            return Err(ck(
                CkRv::ARGUMENTS_BAD,
                "public key must be a DER SubjectPublicKeyInfo",
            ));
        }
        i.require_login(&c, link, &token)?;
        let key = i.key(&c, link, &token, &key_id).await?;
        let oaep_in = Encryption::Oaep {
            hash: in_hash,
            label: Vec::new(),
        };
        oaep_in.check_ciphertext(ciphertext.len(), key.size())?;
        match i
            .call(
                &c,
                link,
                Request::Rewrap {
                    container: token,
                    id: key_id,
                    in_hash,
                    data: ciphertext,
                    out_hash,
                    spki: public_key,
                },
            )
            .await?
        {
            Reply::Rewrapped(r) => Ok(r),
            _ => Err(ck(CkRv::DEVICE_ERROR, "unexpected reply to +CKREWRAP")),
        }
    }

    #[zbus(out_args("fingerprint"))]
    async fn pair(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        handset: String,
        code: String,
    ) -> Result<String> {
        let code = Zeroizing::new(code);
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        if !i.is_admin(&c) {
            return Err(ck(CkRv::FUNCTION_REJECTED, "only root may pair handsets"));
        }
        let link = i.link(&handset)?;
        let code = PairingCode::parse(&code).map_err(|e| ck(CkRv::ARGUMENTS_BAD, e))?;
        let key = link.pair(&c.name, code).await?;
        let _ = Self::tokens_changed(&emitter, &handset).await;
        Ok(fingerprint(&key))
    }

    async fn unpair(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        handset: String,
    ) -> Result<()> {
        let i = &self.inner;
        let c = i.caller(&hdr, conn).await?;
        if !i.is_admin(&c) {
            return Err(ck(CkRv::FUNCTION_REJECTED, "only root may unpair handsets"));
        }
        i.link(&handset)?.unpair(&c.name).await
    }

    #[zbus(signal)]
    async fn handset_connected(emitter: &SignalEmitter<'_>, handset: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn handset_removed(emitter: &SignalEmitter<'_>, handset: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn tokens_changed(emitter: &SignalEmitter<'_>, handset: &str) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "false"))]
    async fn statistics(&self) -> HashMap<String, LinkStatistics> {
        self.inner
            .links
            .values()
            .map(|l| (l.name().to_owned(), l.stats()))
            .collect()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    async fn version(&self) -> String {
        format!("phonecspd {}", env!("CARGO_PKG_VERSION"))
    }
}

impl Inner {
    pub fn config(&self) -> &Config {
        &self.config
    }
}
