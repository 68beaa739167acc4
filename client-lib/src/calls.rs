//! The daemon's methods and properties, listed once. The D-Bus proxy
//! ([`crate::proxy`]), the async client ([`crate::client`]) and the
//! blocking client ([`crate::blocking`]) each expand this list with a
//! macro of their own, so a new D-Bus method is one entry here.
//!
//! A method says how it reaches the daemon: `plain` through the proxy to
//! the well-known name, `trusted` only after the name's owner has been
//! checked to be the daemon's user (it carries a PIN or a pairing code).
//! `-> WIRE as CLIENT` is a reply the clients hand on in another type
//! (a plaintext, zeroized when dropped). A property names its
//! `emits_changed_signal`.

use zeroize::Zeroizing;

use crate::types::MechanismParams;

/// Calls `$then!` with every method and property, each as
/// `{ [DOCS] plain|trusted NAME(ARGS) [WIRE] [CLIENT] [EMITS?] }` (see
/// [`each_call`]).
macro_rules! for_each_call {
    ($then:ident) => {
        crate::calls::each_call! {
            $then;
            methods {
                /// Configured handsets: (name, transport, pinned key fingerprint, connected).
                plain fn list_handsets() -> Vec<HandsetStatus>;
                /// Tokens the caller may use: on connected handsets, and as last
                /// seen on handsets that are away (flagged `token_flags::AWAY`).
                plain fn list_tokens() -> Vec<TokenEntry>;
                plain fn get_token_info(handset: &str, token: &str) -> TokenDetails;
                /// Checks the daemon's identity, then logs this connection in.
                trusted fn login(handset: &str, token: &str, pin: &[u8]) -> ();
                plain fn logout(handset: &str, token: &str) -> ();
                /// Checks the daemon's identity, then changes the PIN.
                trusted fn change_pin(handset: &str, token: &str, old_pin: &[u8], new_pin: &[u8])
                    -> ();
                /// Checks the daemon's identity, then checks the token's PUK (the
                /// PKCS#11 security officer's login): a wrong one spends one of
                /// its tries. No login is kept.
                trusted fn check_puk(handset: &str, token: &str, puk: &[u8]) -> ();
                /// Checks the daemon's identity, then sets a new PIN with the PUK,
                /// also on a locked token: the PIN gets every try again.
                trusted fn unblock(handset: &str, token: &str, puk: &[u8], new_pin: &[u8])
                    -> ();
                /// Checks the daemon's identity, then changes the PUK.
                trusted fn change_puk(handset: &str, token: &str, old_puk: &[u8],
                    new_puk: &[u8]) -> ();
                /// Objects: (CKO_* class, CKA_ID, CKA_LABEL).
                plain fn list_objects(handset: &str, token: &str) -> Vec<ObjectInfo>;
                /// Attributes by `CKA_*` type; numbers are 8-byte big-endian.
                plain fn get_attributes(handset: &str, token: &str, class: u32, id: &[u8])
                    -> HashMap<u32, Vec<u8>>;
                plain fn sign(handset: &str, token: &str, key_id: &[u8], mechanism: u32,
                    params: &MechanismParams, data: &[u8]) -> Vec<u8>;
                /// `Ok(false)`: the signature does not verify.
                plain fn verify(handset: &str, token: &str, key_id: &[u8], mechanism: u32,
                    params: &MechanismParams, data: &[u8], signature: &[u8]) -> bool;
                /// The plaintext, zeroized when dropped.
                plain fn decrypt(handset: &str, token: &str, key_id: &[u8], mechanism: u32,
                    params: &MechanismParams, ciphertext: &[u8]) -> Vec<u8> as Zeroizing<Vec<u8>>;
                plain fn encrypt(handset: &str, token: &str, key_id: &[u8], mechanism: u32,
                    params: &MechanismParams, plaintext: &[u8]) -> Vec<u8>;
                plain fn digest(mechanism: u32, data: &[u8]) -> Vec<u8>;
                /// An empty `id` lets the handset choose the CKA_ID.
                plain fn generate_key_pair(handset: &str, token: &str, bits: u32, id: &[u8],
                    label: &str) -> KeyPairInfo;
                /// An EC key pair; `curve` as `+CKGENEC` numbers it (1 P-256,
                /// 2 P-384, 3 Ed25519). An empty `id` lets the handset choose.
                plain fn generate_ec_key_pair(handset: &str, token: &str, curve: u32, id: &[u8],
                    label: &str) -> EcKeyPairInfo;
                /// `CKM_ECDH1_DERIVE`'s private step: the shared secret Z (the
                /// x-coordinate) for the peer's uncompressed point, zeroized when
                /// dropped; the caller applies the KDF.
                plain fn derive(handset: &str, token: &str, key_id: &[u8], mechanism: u32,
                    peer_point: &[u8]) -> Vec<u8> as Zeroizing<Vec<u8>>;
                /// Checks the daemon's identity, then moves a private key made
                /// elsewhere (unencrypted PKCS#8 DER) onto the handset; answered
                /// as a generated key. The caller's copy is its own to wipe.
                trusted fn import_key(handset: &str, token: &str, id: &[u8], label: &str,
                    private_key: &[u8]) -> KeyPairInfo;
                /// As `import_key`, for an EC private key (P-256, P-384 or Ed25519
                /// PKCS#8): answered as a generated EC key, with its public point.
                trusted fn import_ec_key(handset: &str, token: &str, id: &[u8], label: &str,
                    private_key: &[u8]) -> EcKeyPairInfo;
                /// The handset's statement about the key `key_id` for `nonce` (16 to
                /// 64 bytes), checked by the daemon against the handset's pinned
                /// identity and attestation key (pinned at the first one).
                plain fn attest_key(handset: &str, token: &str, key_id: &[u8], nonce: &[u8])
                    -> Vec<u8>;
                /// The handset's pinned attestation key; empty before its first
                /// statement.
                plain fn attestation_key(handset: &str) -> Vec<u8>;
                plain fn generate_random(handset: &str, length: u32) -> Vec<u8>;
                /// `certificate` is DER.
                plain fn import_certificate(handset: &str, token: &str, id: &[u8], label: &str,
                    certificate: &[u8]) -> ();
                /// A data object (`CKO_DATA`), replacing one with the same id;
                /// `object_id` is `CKA_OBJECT_ID` (DER), `value` `CKA_VALUE`.
                plain fn import_data(handset: &str, token: &str, id: &[u8], label: &str,
                    application: &str, object_id: &[u8], value: &[u8]) -> ();
                /// `class`: `CKO_DATA` (0), `CKO_CERTIFICATE` (1) or `CKO_PRIVATE_KEY`
                /// (3, the key pair).
                plain fn delete_object(handset: &str, token: &str, class: u32, id: &[u8]) -> ();
                /// `public_key` is a DER SubjectPublicKeyInfo; hashes are `CKM_SHA*`.
                plain fn rewrap(handset: &str, token: &str, key_id: &[u8], in_hash: u32,
                    ciphertext: &[u8], out_hash: u32, public_key: &[u8]) -> Vec<u8>;
                /// Root, or a caller polkit allows `org.phonecsp.pair`. Checks the
                /// daemon's identity, then pairs with the one-time code; returns
                /// the handset key's fingerprint.
                trusted fn pair(handset: &str, code: &str) -> String;
                /// Root, or a caller polkit allows `org.phonecsp.unpair`.
                plain fn unpair(handset: &str) -> ();
                /// Root and the daemon's user: marks (or unmarks) a token that
                /// a disk volume was enrolled to (`token_flags::DISK`).
                plain fn mark_disk_token(handset: &str, token: &str, disk: bool) -> ();
            }
            properties {
                /// Per handset: requests, bytes sent to it, bytes received from
                /// it. Read afresh on every call: the counters change all the time.
                fn statistics() -> HashMap<String, LinkStatistics> = "false";
                /// The daemon's version.
                fn version() -> String = "const";
            }
        }
    };
}
pub(crate) use for_each_call;

/// The list, read once: a property is a `plain` call without arguments
/// that names its `emits_changed_signal`; CLIENT is WIRE unless the entry
/// says `as CLIENT`.
macro_rules! each_call {
    (
        $then:ident;
        methods { $($(#[$doc:meta])* $via:ident fn $name:ident($($arg:ident: $ty:ty),*)
            -> $wire:ty $(as $ret:ty)?;)* }
        properties { $($(#[$pdoc:meta])* fn $prop:ident() -> $pty:ty = $emits:literal;)* }
    ) => {
        $then! {
            $({ [$(#[$doc])*] $via $name($($arg: $ty),*) [$wire]
                [crate::calls::returned!($wire $(, $ret)?)] [] })*
            $({ [$(#[$pdoc])*] plain $prop() [$pty] [$pty] [$emits] })*
        }
    };
}
pub(crate) use each_call;

/// The type the clients return: `CLIENT` of `-> WIRE as CLIENT`, else `WIRE`.
macro_rules! returned {
    ($wire:ty) => {
        $wire
    };
    ($wire:ty, $client:ty) => {
        $client
    };
}
pub(crate) use returned;

/// An argument of a blocking call, taken over to the runtime's thread:
/// owned there (bytes in [`Zeroizing`]: they may be a PIN or a plaintext),
/// lent to the async call.
pub(crate) trait Carry {
    type Owned: Lend + Send + 'static;
    fn carry(self) -> Self::Owned;
}

/// The owned form of an argument, lent back as the argument's type.
pub(crate) trait Lend {
    type Lent<'a>
    where
        Self: 'a;
    fn lend(&self) -> Self::Lent<'_>;
}

/// Arguments passed by reference travel as their owned form and are lent
/// back as a reference.
macro_rules! carried_by_reference {
    ($($t:ty => $owned:ty, $carry:expr;)*) => {$(
        impl Carry for &$t {
            type Owned = $owned;
            fn carry(self) -> $owned {
                $carry(self)
            }
        }

        impl Lend for $owned {
            type Lent<'a> = &'a $t;
            fn lend(&self) -> &$t {
                self
            }
        }
    )*};
}

carried_by_reference! {
    str => String, str::to_owned;
    [u8] => Zeroizing<Vec<u8>>, |b: &[u8]| Zeroizing::new(b.to_vec());
    MechanismParams => MechanismParams, MechanismParams::clone;
}

/// Numbers and flags are copied over as they are.
macro_rules! carried_by_copy {
    ($($t:ty),*) => {$(
        impl Carry for $t {
            type Owned = $t;
            fn carry(self) -> $t {
                self
            }
        }

        impl Lend for $t {
            type Lent<'a> = $t;
            fn lend(&self) -> $t {
                *self
            }
        }
    )*};
}

carried_by_copy!(u32, bool);

#[cfg(test)]
mod tests {
    macro_rules! names {
        ($({ [$(#[$d:meta])*] $v:ident $name:ident($($a:ident: $t:ty),*) [$w:ty] [$r:ty] [$($e:literal)?] })*) => {
            [$(stringify!($name)),*]
        };
    }

    fn snake_case(camel: &str) -> String {
        let mut out = String::new();
        for c in camel.chars() {
            if c.is_ascii_uppercase() {
                if !out.is_empty() {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The list is the clients' whole API: every method and property of
    /// the interface's XML is in it, and nothing else.
    #[test]
    fn every_method_and_property_of_the_interface_is_listed() {
        let xml = include_str!("../../dbus/org.phonecsp.CryptoProvider1.xml");
        let mut want: Vec<String> = xml
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let rest = l
                    .strip_prefix("<method name=\"")
                    .or_else(|| l.strip_prefix("<property name=\""))?;
                rest.split('"').next().map(snake_case)
            })
            .collect();
        let mut got: Vec<String> = for_each_call!(names)
            .iter()
            .map(|n| n.to_string())
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(got.len(), 33);
    }
}
