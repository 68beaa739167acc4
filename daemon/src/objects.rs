//! The object API: one D-Bus object per handset, per token and per key,
//! under an `org.freedesktop.DBus.ObjectManager` at [`ROOT`], in the
//! manner of UDisks2 (an object per drive and block device) and BlueZ (an
//! object per adapter and device). Programs read state from properties
//! and watch `PropertiesChanged`, `InterfacesAdded` and
//! `InterfacesRemoved` instead of polling `List*` methods.
//!
//! The [`Tree`] is the one writer of the object tree: link state changes
//! and token changes ask it to look at a handset again ([`Inner::resync`]),
//! and it brings the published objects in line with what the handset
//! holds, reading through the same per-session cache as every caller, so
//! that publishing a key costs the link nothing a first use would not.

mod handset;
mod key;
mod token;

pub use handset::HandsetObject;
pub use key::{KeyObject, KeySnapshot, snapshot};
pub use token::{TokenObject, TokenSnapshot};

use crate::agent::AgentManager;
use crate::service::Inner;
use phonecsp_protocol::ObjectClass;
use phonecsp_protocol::ck::cka;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use zbus::{Connection, fdo};

// The paths are the client library's, so that both always agree.
pub use phonecsp::objects::{ROOT, handset_path, key_path, token_path};

/// Why the tree looks at a handset again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// Its link or pairing changed: read it if this link session has not
    /// been read yet.
    Link,
    /// Its tokens or objects changed: read it again.
    Objects,
}

/// What one handset's objects are, as last published.
#[derive(Default)]
struct Published {
    connected: bool,
    paired: bool,
    /// The link session last read (`None`: read while away).
    read_in: Option<Option<u64>>,
    /// Token name to the ids of its published keys.
    tokens: BTreeMap<String, BTreeSet<Vec<u8>>>,
}

/// The one writer of the object tree.
pub struct Tree {
    conn: Connection,
    inner: Arc<Inner>,
    published: tokio::sync::Mutex<BTreeMap<String, Published>>,
}

impl Tree {
    /// Serves the ObjectManager, the agent manager and one object per
    /// configured handset, then keeps the tree in line with the handsets
    /// until the connection closes.
    pub async fn start(conn: &Connection, inner: Arc<Inner>) -> zbus::Result<Arc<Tree>> {
        let server = conn.object_server();
        server.at(ROOT, fdo::ObjectManager).await?;
        server.at(ROOT, AgentManager::new(inner.clone())).await?;
        for name in inner.links().keys() {
            server
                .at(
                    handset_path(name),
                    HandsetObject::new(inner.clone(), name.clone()),
                )
                .await?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        inner.set_resync(tx);
        let tree = Arc::new(Tree {
            conn: conn.clone(),
            inner: inner.clone(),
            published: tokio::sync::Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(tree.clone().serve(rx));
        for name in inner.links().keys() {
            inner.link_changed(name);
        }
        Ok(tree)
    }

    async fn serve(self: Arc<Tree>, mut rx: mpsc::UnboundedReceiver<(String, Resync)>) {
        while let Some(first) = rx.recv().await {
            // Requests that piled up while a sync ran are served together:
            // one read per handset, if any of them needs one.
            let mut pending = BTreeMap::new();
            let mut add = |(h, why): (String, Resync)| {
                let e = pending.entry(h).or_insert(why);
                if why == Resync::Objects {
                    *e = why;
                }
            };
            add(first);
            while let Ok(next) = rx.try_recv() {
                add(next);
            }
            for (h, why) in pending {
                if let Err(e) = self.sync(&h, why).await {
                    log::debug!("object tree of handset '{h}': {e}");
                }
            }
        }
    }

    /// What the handset holds now: each token with its keys, read through
    /// the session cache. `None` while the handset is away.
    async fn read(
        &self,
        handset: &str,
    ) -> phonecsp::Result<Option<Vec<(TokenSnapshot, Vec<KeySnapshot>)>>> {
        let Some(containers) = self.inner.containers(handset).await? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for (token, _) in containers {
            let call = self.inner.call_internal(handset, &token)?;
            let details = call.details().await?;
            let cache = call.objects().await?;
            let mut keys = Vec::new();
            for k in &cache.keys {
                let label = cache
                    .objects
                    .iter()
                    .filter(|o| o.id == k.id)
                    .min_by_key(|o| o.class != ObjectClass::PrivateKey.value() as u32)
                    .map(|o| o.label.clone())
                    .unwrap_or_default();
                let has_certificate = cache
                    .objects
                    .iter()
                    .any(|o| o.id == k.id && o.class == ObjectClass::Certificate.value() as u32);
                let certificate = match has_certificate {
                    true => call
                        .attributes(ObjectClass::Certificate, &k.id)
                        .await?
                        .remove(&cka::VALUE)
                        .unwrap_or_default(),
                    false => Vec::new(),
                };
                keys.push(snapshot(
                    (handset, &token),
                    &k.id,
                    label,
                    &k.public,
                    certificate,
                ));
            }
            out.push((TokenSnapshot::from_details(&details, true), keys));
        }
        Ok(Some(out))
    }

    /// Brings the published objects of `handset` in line with the handset.
    async fn sync(&self, handset: &str, why: Resync) -> zbus::Result<()> {
        let generation = self.inner.generation_of(handset);
        let read_in = self
            .published
            .lock()
            .await
            .get(handset)
            .and_then(|p| p.read_in);
        if why == Resync::Link && read_in == Some(generation) {
            return self.sync_handset(handset, generation.is_some()).await;
        }
        let now = match self.read(handset).await {
            Ok(now) => now,
            Err(e) => {
                // The link dropped mid-way: the state change that follows
                // asks again.
                log::debug!("reading handset '{handset}' for the object tree: {e}");
                return Ok(());
            }
        };
        self.sync_handset(handset, now.is_some()).await?;
        let mut published = self.published.lock().await;
        let p = published.entry(handset.to_owned()).or_default();
        p.read_in = Some(generation);
        let server = self.conn.object_server();

        // Away: its tokens stay, as last seen and not present; keys go.
        let now = match now {
            Some(now) => now,
            None => self
                .inner
                .known_away(handset)
                .into_iter()
                .map(|name| (TokenSnapshot::away(&name), Vec::new()))
                .collect(),
        };
        let wanted: BTreeSet<&str> = now.iter().map(|(t, _)| t.name.as_str()).collect();
        let gone: Vec<String> = p
            .tokens
            .keys()
            .filter(|t| !wanted.contains(t.as_str()))
            .cloned()
            .collect();
        for token in gone {
            let ids = p.tokens.remove(&token).unwrap_or_default();
            for id in ids {
                server
                    .remove::<KeyObject, _>(key_path(handset, &token, &id))
                    .await?;
            }
            server
                .remove::<TokenObject, _>(token_path(handset, &token))
                .await?;
        }
        for (snapshot, keys) in now {
            let token = snapshot.name.clone();
            let path = token_path(handset, &token);
            match p.tokens.get(&token) {
                None => {
                    server
                        .at(
                            &path,
                            TokenObject::new(self.inner.clone(), handset, snapshot),
                        )
                        .await?;
                    p.tokens.insert(token.clone(), BTreeSet::new());
                }
                Some(_) => {
                    let iface = server.interface::<_, TokenObject>(&path).await?;
                    iface
                        .get()
                        .await
                        .update(snapshot, iface.signal_emitter())
                        .await?;
                }
            }
            let ids = p.tokens.entry(token.clone()).or_default();
            self.sync_keys(handset, &token, ids, keys).await?;
        }
        Ok(())
    }

    /// Says so where the handset's Connected or Paired changed.
    async fn sync_handset(&self, handset: &str, connected: bool) -> zbus::Result<()> {
        let mut published = self.published.lock().await;
        let p = published.entry(handset.to_owned()).or_default();
        let paired = self.inner.is_paired(handset);
        if (connected, paired) == (p.connected, p.paired) {
            return Ok(());
        }
        let iface = self
            .conn
            .object_server()
            .interface::<_, HandsetObject>(handset_path(handset))
            .await?;
        let emitter = iface.signal_emitter();
        if connected != p.connected {
            iface.get().await.connected_changed(emitter).await?;
        }
        if paired != p.paired {
            iface.get().await.paired_changed_all(emitter).await?;
        }
        (p.connected, p.paired) = (connected, paired);
        Ok(())
    }

    async fn sync_keys(
        &self,
        handset: &str,
        token: &str,
        ids: &mut BTreeSet<Vec<u8>>,
        keys: Vec<KeySnapshot>,
    ) -> zbus::Result<()> {
        let server = self.conn.object_server();
        let wanted: BTreeSet<Vec<u8>> = keys.iter().map(|k| k.id.clone()).collect();
        for id in ids.difference(&wanted).cloned().collect::<Vec<_>>() {
            server
                .remove::<KeyObject, _>(key_path(handset, token, &id))
                .await?;
            ids.remove(&id);
        }
        for k in keys {
            let path = key_path(handset, token, &k.id);
            if ids.contains(&k.id) {
                let iface = server.interface::<_, KeyObject>(&path).await?;
                iface.get().await.update(k, iface.signal_emitter()).await?;
            } else {
                ids.insert(k.id.clone());
                server
                    .at(&path, KeyObject::new(self.inner.clone(), handset, token, k))
                    .await?;
            }
        }
        Ok(())
    }
}
