//! Object handles: each (slot, class, CKA_ID) the module has shown a caller
//! gets one handle for the life of the process, so a handle found in one
//! session names the same object in every other.

use std::collections::HashMap;

use cryptoki_sys::*;

/// An object as the handset knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjKey {
    pub slot: usize,
    pub class: CK_OBJECT_CLASS,
    pub id: Vec<u8>,
}

#[derive(Default)]
pub struct Registry {
    next: CK_OBJECT_HANDLE,
    by_key: HashMap<ObjKey, CK_OBJECT_HANDLE>,
    by_handle: HashMap<CK_OBJECT_HANDLE, ObjKey>,
}

impl Registry {
    /// The handle of `key`, given out now if it has none yet.
    pub fn handle(&mut self, key: ObjKey) -> CK_OBJECT_HANDLE {
        if let Some(h) = self.by_key.get(&key) {
            return *h;
        }
        self.next += 1;
        let h = self.next;
        self.by_key.insert(key.clone(), h);
        self.by_handle.insert(h, key);
        h
    }

    /// A handle for an object the module keeps itself (a session object):
    /// from the same sequence, so that no two objects share one.
    pub fn fresh(&mut self) -> CK_OBJECT_HANDLE {
        self.next += 1;
        self.next
    }

    pub fn get(&self, h: CK_OBJECT_HANDLE) -> Option<&ObjKey> {
        self.by_handle.get(&h)
    }

    pub fn remove(&mut self, key: &ObjKey) {
        if let Some(h) = self.by_key.remove(key) {
            self.by_handle.remove(&h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_stable_and_removable() {
        let mut r = Registry::default();
        let k = ObjKey {
            slot: 0,
            class: CKO_CERTIFICATE,
            id: vec![1],
        };
        let h = r.handle(k.clone());
        assert_eq!(r.handle(k.clone()), h);
        r.remove(&k);
        assert!(r.get(h).is_none());
        assert_ne!(r.handle(k), h);
    }
}
