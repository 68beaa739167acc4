//! Session objects: what this application made without `CKA_TOKEN=TRUE`.
//! The module keeps them in memory, visible to every session of the
//! application on their slot, until the session that made them closes
//! (or `C_Finalize`). Most are plain attribute sets (data objects,
//! certificates, public keys, secret keys); a key pair generated as
//! session objects lives on the phone, whose private keys never leave it,
//! and is only noted here, so that it is deleted there with its session.

use std::collections::HashMap;
use std::sync::Arc;

use cryptoki_sys::*;

use crate::objects::AttrMap;

/// An object the module keeps for this application.
pub struct SessionObject {
    pub slot: usize,
    /// The session that made it, and whose closing destroys it.
    pub owner: CK_SESSION_HANDLE,
    pub attrs: Arc<AttrMap>,
}

/// A key pair on the phone that the caller made as session objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhonePair {
    pub slot: usize,
    pub id: Vec<u8>,
    pub owner: CK_SESSION_HANDLE,
}

#[derive(Default)]
pub struct SessionObjects {
    objects: HashMap<CK_OBJECT_HANDLE, SessionObject>,
    pairs: Vec<PhonePair>,
}

impl SessionObjects {
    pub fn insert(&mut self, h: CK_OBJECT_HANDLE, o: SessionObject) {
        self.objects.insert(h, o);
    }

    pub fn get(&self, h: CK_OBJECT_HANDLE) -> Option<&SessionObject> {
        self.objects.get(&h)
    }

    pub fn get_mut(&mut self, h: CK_OBJECT_HANDLE) -> Option<&mut SessionObject> {
        self.objects.get_mut(&h)
    }

    pub fn remove(&mut self, h: CK_OBJECT_HANDLE) -> Option<SessionObject> {
        self.objects.remove(&h)
    }

    /// The objects on `slot`, in handle order (so that a search answers
    /// the same way each time).
    pub fn on_slot(&self, slot: usize) -> Vec<(CK_OBJECT_HANDLE, Arc<AttrMap>)> {
        let mut v: Vec<_> = self
            .objects
            .iter()
            .filter(|(_, o)| o.slot == slot)
            .map(|(h, o)| (*h, Arc::clone(&o.attrs)))
            .collect();
        v.sort_by_key(|(h, _)| *h);
        v
    }

    pub fn add_pair(&mut self, p: PhonePair) {
        self.pairs.push(p);
    }

    /// The session that owns the phone key pair `(slot, id)`, if it is a
    /// session pair.
    pub fn pair_owner(&self, slot: usize, id: &[u8]) -> Option<CK_SESSION_HANDLE> {
        self.pairs
            .iter()
            .find(|p| p.slot == slot && p.id == id)
            .map(|p| p.owner)
    }

    pub fn forget_pair(&mut self, slot: usize, id: &[u8]) {
        self.pairs.retain(|p| !(p.slot == slot && p.id == id));
    }

    /// Destroys what the sessions `closed` made; the phone key pairs among
    /// it are handed back for deletion on the phone.
    pub fn close(&mut self, closed: impl Fn(CK_SESSION_HANDLE) -> bool) -> Vec<PhonePair> {
        self.objects.retain(|_, o| !closed(o.owner));
        let (gone, kept) = std::mem::take(&mut self.pairs)
            .into_iter()
            .partition(|p| closed(p.owner));
        self.pairs = kept;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_a_session_destroys_only_its_objects() {
        let mut s = SessionObjects::default();
        let o = |owner| SessionObject {
            slot: 0,
            owner,
            attrs: Arc::new(AttrMap::new()),
        };
        s.insert(10, o(1));
        s.insert(11, o(2));
        s.add_pair(PhonePair {
            slot: 0,
            id: vec![7],
            owner: 1,
        });
        assert_eq!(s.pair_owner(0, &[7]), Some(1));
        let gone = s.close(|h| h == 1);
        assert_eq!(gone.len(), 1);
        assert!(s.get(10).is_none());
        assert!(s.get(11).is_some());
        assert_eq!(s.pair_owner(0, &[7]), None);
        assert_eq!(s.on_slot(0).len(), 1);
    }
}
