//! One typed call layer to a handset. Whatever carries the requests (the
//! daemon's link task, or a link this process opened itself, as the disk
//! keyscript does in an initramfs) implements [`HandsetLink::call`]; the
//! typed helpers of [`Handset`] build each [`Request`] and unwrap its
//! [`Reply`] in one place, so an unexpected reply is handled once.

use std::future::Future;

use phonecsp_protocol::message::{ContainerEntry, DataObject, ObjectEntry, TokenInfo};
use phonecsp_protocol::{CkRv, Curve, DecryptMechanism, HashAlg, ObjectClass, Reply, Request};
use rsa::RsaPublicKey;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::input::HandsetSign;

/// Something that carries one request to a handset and brings its reply.
/// A refusal by the handset is an [`Error::Token`] with the handset's CK_RV.
pub trait HandsetLink {
    fn call(&mut self, request: Request) -> impl Future<Output = Result<Reply>> + Send;
}

/// A freshly generated key pair, as the handset reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    pub id: Vec<u8>,
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
}

/// The public half of an imported key, as the handset reports it: as a
/// generated key of its kind is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportedKey {
    Rsa(GeneratedKey),
    /// The id and the public point (SEC1 uncompressed, or Ed25519's 32 bytes).
    Ec {
        id: Vec<u8>,
        point: Vec<u8>,
    },
}

fn unexpected(what: &str) -> Error {
    Error::token(CkRv::DEVICE_ERROR, format!("unexpected reply to {what}"))
}

/// Sends `$request` and takes the one reply variant it may have.
macro_rules! expect {
    ($link:expr, $request:expr, $pat:pat => $out:expr) => {{
        let request = $request;
        let what = request.name();
        match $link.call(request).await? {
            $pat => Ok($out),
            _ => Err(unexpected(what)),
        }
    }};
}

/// The typed requests, for every [`HandsetLink`].
pub trait Handset: HandsetLink + Send {
    fn list_containers(&mut self) -> impl Future<Output = Result<Vec<ContainerEntry>>> + Send {
        async move { expect!(self, Request::ListContainers, Reply::Containers(c) => c) }
    }

    fn token_info(&mut self, container: &str) -> impl Future<Output = Result<TokenInfo>> + Send {
        let container = container.to_owned();
        async move { expect!(self, Request::TokenInfo { container }, Reply::TokenInfo(i) => i) }
    }

    fn login(&mut self, container: &str, pin: &[u8]) -> impl Future<Output = Result<()>> + Send {
        self.done(Request::login(container, pin))
    }

    /// Sends a request whose answer is `OK` alone: a change of PIN or
    /// PUK (made with [`Request::change_pin`] and its siblings), a
    /// security officer's login or logout.
    fn done(&mut self, request: Request) -> impl Future<Output = Result<()>> + Send {
        async move { expect!(self, request, Reply::Done => ()) }
    }

    fn logout(&mut self, container: &str) -> impl Future<Output = Result<()>> + Send {
        let container = container.to_owned();
        async move { expect!(self, Request::Logout { container }, Reply::Done => ()) }
    }

    fn find_objects(
        &mut self,
        container: &str,
        class: Option<ObjectClass>,
        id: Option<Vec<u8>>,
        label: Option<String>,
    ) -> impl Future<Output = Result<Vec<ObjectEntry>>> + Send {
        let request = Request::FindObjects {
            container: container.to_owned(),
            class,
            id,
            label,
        };
        async move { expect!(self, request, Reply::Objects(o) => o) }
    }

    fn attributes(
        &mut self,
        container: &str,
        class: ObjectClass,
        id: &[u8],
    ) -> impl Future<Output = Result<Vec<(u32, Vec<u8>)>>> + Send {
        let request = Request::GetAttributes {
            container: container.to_owned(),
            class,
            id: id.to_vec(),
        };
        async move { expect!(self, request, Reply::Attributes(a) => a) }
    }

    /// The RSA public key of the key pair `id`.
    fn public_key(
        &mut self,
        container: &str,
        id: &[u8],
    ) -> impl Future<Output = Result<RsaPublicKey>> + Send {
        let attributes = self.attributes(container, ObjectClass::PublicKey, id);
        async move {
            let attributes = attributes.await?;
            crate::local::public_key_from_attributes(attributes.iter().map(|(t, v)| (t, v)))
                .map_err(|rv| Error::token(rv, "not an RSA public key"))
        }
    }

    fn sign(
        &mut self,
        container: &str,
        id: &[u8],
        input: HandsetSign,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send {
        let request = Request::Sign {
            container: container.to_owned(),
            id: id.to_vec(),
            mechanism: input.mechanism,
            data: input.data,
        };
        async move { expect!(self, request, Reply::Signature(s) => s) }
    }

    fn decrypt(
        &mut self,
        container: &str,
        id: &[u8],
        mechanism: DecryptMechanism,
        ciphertext: &[u8],
    ) -> impl Future<Output = Result<Zeroizing<Vec<u8>>>> + Send {
        let request = Request::Decrypt {
            container: container.to_owned(),
            id: id.to_vec(),
            mechanism,
            data: ciphertext.to_vec(),
        };
        async move { expect!(self, request, Reply::Plaintext(p) => p) }
    }

    fn generate_key_pair(
        &mut self,
        container: &str,
        bits: u32,
        id: &[u8],
        label: &str,
    ) -> impl Future<Output = Result<GeneratedKey>> + Send {
        let request = Request::GenerateKeyPair {
            container: container.to_owned(),
            bits,
            id: id.to_vec(),
            label: label.to_owned(),
        };
        async move {
            expect!(self, request, Reply::KeyPair { id, modulus, exponent } => GeneratedKey {
                id,
                modulus,
                exponent,
            })
        }
    }

    fn generate_ec_key_pair(
        &mut self,
        container: &str,
        curve: Curve,
        id: &[u8],
        label: &str,
    ) -> impl Future<Output = Result<(Vec<u8>, Vec<u8>)>> + Send {
        let request = Request::GenerateEcKeyPair {
            container: container.to_owned(),
            curve,
            id: id.to_vec(),
            label: label.to_owned(),
        };
        async move { expect!(self, request, Reply::EcKeyPair { id, point } => (id, point)) }
    }

    /// ECDH's private step: Z for the peer's point.
    fn derive(
        &mut self,
        container: &str,
        id: &[u8],
        peer: &[u8],
    ) -> impl Future<Output = Result<Zeroizing<Vec<u8>>>> + Send {
        let request = Request::Derive {
            container: container.to_owned(),
            id: id.to_vec(),
            peer: peer.to_vec(),
        };
        async move { expect!(self, request, Reply::Derived(z) => z) }
    }

    /// `+CKIMPORT`: a private key made elsewhere (unencrypted PKCS#8 DER),
    /// onto the phone; answered as a generated key is.
    fn import_key(
        &mut self,
        container: &str,
        id: &[u8],
        label: &str,
        pkcs8: &[u8],
    ) -> impl Future<Output = Result<ImportedKey>> + Send {
        let request = Request::ImportKey {
            container: container.to_owned(),
            id: id.to_vec(),
            label: label.to_owned(),
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
        };
        async move {
            match self.call(request).await? {
                Reply::KeyPair {
                    id,
                    modulus,
                    exponent,
                } => Ok(ImportedKey::Rsa(GeneratedKey {
                    id,
                    modulus,
                    exponent,
                })),
                Reply::EcKeyPair { id, point } => Ok(ImportedKey::Ec { id, point }),
                _ => Err(unexpected("+CKIMPORT")),
            }
        }
    }

    /// `+CKATTEST`: the handset's signed statement about the key `id`,
    /// for `nonce` (docs/attestation.md); unchecked here.
    fn attest(
        &mut self,
        container: &str,
        id: &[u8],
        nonce: &[u8],
    ) -> impl Future<Output = Result<Vec<u8>>> + Send {
        let request = Request::Attest {
            container: container.to_owned(),
            id: id.to_vec(),
            nonce: nonce.to_vec(),
        };
        async move { expect!(self, request, Reply::Attestation(s) => s) }
    }

    fn random(&mut self, len: u32) -> impl Future<Output = Result<Vec<u8>>> + Send {
        async move { expect!(self, Request::GenerateRandom { len }, Reply::Random(r) => r) }
    }

    fn put_certificate(
        &mut self,
        container: &str,
        id: &[u8],
        label: &str,
        der: &[u8],
    ) -> impl Future<Output = Result<()>> + Send {
        let request = Request::PutCertificate {
            container: container.to_owned(),
            id: id.to_vec(),
            label: label.to_owned(),
            der: der.to_vec(),
        };
        async move { expect!(self, request, Reply::Done => ()) }
    }

    /// Stores a data object, replacing one with the same id.
    fn put_data(
        &mut self,
        container: &str,
        object: DataObject,
    ) -> impl Future<Output = Result<()>> + Send {
        let container = container.to_owned();
        async move { expect!(self, Request::PutData { container, object }, Reply::Done => ()) }
    }

    /// Deletes the certificate or data object `id`, or the key pair `id`
    /// (a private or a public key names the pair: the handset keeps both
    /// halves together).
    fn delete_object(
        &mut self,
        container: &str,
        class: ObjectClass,
        id: &[u8],
    ) -> impl Future<Output = Result<()>> + Send {
        let (container, id) = (container.to_owned(), id.to_vec());
        let request = match class {
            ObjectClass::Certificate => Request::DeleteCertificate { container, id },
            ObjectClass::Data => Request::DeleteData { container, id },
            ObjectClass::PrivateKey | ObjectClass::PublicKey => {
                Request::DestroyKey { container, id }
            }
        };
        async move { expect!(self, request, Reply::Done => ()) }
    }

    /// OAEP-decrypts `data` with the key `id` and encrypts the result to
    /// `spki`, inside the handset.
    #[allow(clippy::too_many_arguments)]
    fn rewrap(
        &mut self,
        container: &str,
        id: &[u8],
        in_hash: HashAlg,
        data: &[u8],
        out_hash: HashAlg,
        spki: &[u8],
    ) -> impl Future<Output = Result<Vec<u8>>> + Send {
        let request = Request::Rewrap {
            container: container.to_owned(),
            id: id.to_vec(),
            in_hash,
            data: data.to_vec(),
            out_hash,
            spki: spki.to_vec(),
        };
        async move { expect!(self, request, Reply::Rewrapped(r) => r) }
    }
}

impl<T: HandsetLink + Send> Handset for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Answers from a script and records what was asked.
    struct Scripted {
        replies: VecDeque<Result<Reply>>,
        asked: Vec<Request>,
    }

    impl HandsetLink for Scripted {
        fn call(&mut self, request: Request) -> impl Future<Output = Result<Reply>> + Send {
            self.asked.push(request);
            let r = self.replies.pop_front().unwrap_or(Ok(Reply::Done));
            async move { r }
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn typed_calls_unwrap_their_reply_once() {
        let mut link = Scripted {
            replies: VecDeque::from([
                Ok(Reply::Signature(vec![7; 4])),
                Ok(Reply::Done),
                Err(Error::from(CkRv::PIN_INCORRECT)),
            ]),
            asked: Vec::new(),
        };
        let input = HandsetSign {
            mechanism: phonecsp_protocol::SignMechanism::Pkcs1,
            data: vec![1, 2],
        };
        assert_eq!(block_on(link.sign("c", b"k", input)).unwrap(), vec![7; 4]);
        // A reply of the wrong kind is a device error, named by command.
        let e = block_on(link.random(8)).unwrap_err();
        assert_eq!(e.rv(), CkRv::DEVICE_ERROR);
        assert!(e.to_string().contains("+CKRAND"), "{e}");
        // The handset's refusal comes through with its CK_RV.
        assert_eq!(
            block_on(link.login("c", b"1234")).unwrap_err().rv(),
            CkRv::PIN_INCORRECT
        );
        assert!(matches!(link.asked[0], Request::Sign { .. }));
        assert!(matches!(link.asked[2], Request::Login { .. }));
    }
}
