//! Objects as PKCS#11 sees them: the attributes of a handset's private
//! key, public key and certificate, built from what the daemon reports
//! (numbers there are 8-byte big-endian; here they are native `CK_ULONG`s)
//! plus the fixed facts of a handset key (sensitive, never extractable,
//! generated on the token). Also the templates callers give.

use std::collections::{BTreeMap, HashMap};

use cryptoki_sys::*;
use sha1::Digest;

use crate::error::{Result, fail};
use crate::mechanisms;

/// One attribute's value, or the fact that it is sensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bytes(Vec<u8>),
    Sensitive,
}

pub type AttrMap = BTreeMap<CK_ATTRIBUTE_TYPE, Value>;

/// A caller's template, read from its `CK_ATTRIBUTE` array.
pub type Template = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;

pub fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

pub fn bbool(b: bool) -> Vec<u8> {
    vec![if b { CK_TRUE } else { CK_FALSE }]
}

/// A `CK_ULONG` from a template value of the right size.
pub fn as_ulong(v: &[u8]) -> Result<CK_ULONG> {
    match <[u8; std::mem::size_of::<CK_ULONG>()]>::try_from(v) {
        Ok(b) => Ok(CK_ULONG::from_ne_bytes(b)),
        Err(_) => fail(CKR_ATTRIBUTE_VALUE_INVALID),
    }
}

/// A `CK_BBOOL` from a template value.
pub fn as_bool(v: &[u8]) -> Result<bool> {
    match v {
        [b] => Ok(*b != CK_FALSE),
        _ => fail(CKR_ATTRIBUTE_VALUE_INVALID),
    }
}

/// The value of `t` in a template, if present.
pub fn find(template: &Template, t: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
    template
        .iter()
        .find(|(a, _)| *a == t)
        .map(|(_, v)| v.as_slice())
}

fn be_number(v: &[u8]) -> CK_ULONG {
    v.iter().fold(0, |acc: CK_ULONG, b| {
        acc.wrapping_shl(8) | CK_ULONG::from(*b)
    })
}

/// Attributes the daemon sends as 8-byte big-endian numbers.
const NUMBERS: [CK_ATTRIBUTE_TYPE; 4] = [
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_MODULUS_BITS,
    CKA_CERTIFICATE_TYPE,
];

/// The values no one may read from a private key.
const SENSITIVE: [CK_ATTRIBUTE_TYPE; 7] = [
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
    CKA_VALUE,
];

fn allowed_mechanisms(class: CK_OBJECT_CLASS) -> Vec<u8> {
    let want = if class == CKO_PRIVATE_KEY {
        CKF_SIGN | CKF_DECRYPT
    } else {
        CKF_VERIFY | CKF_ENCRYPT
    };
    mechanisms::MECHANISMS
        .iter()
        .filter(|(_, _, _, f)| f & want != 0)
        .flat_map(|(m, ..)| m.to_ne_bytes())
        .collect()
}

/// The full attribute set of an object of `class`, from the daemon's
/// attributes for it.
pub fn build(class: CK_OBJECT_CLASS, daemon: &HashMap<u32, Vec<u8>>) -> AttrMap {
    let mut m = AttrMap::new();
    let b = |v: bool| Value::Bytes(bbool(v));
    for (t, v) in daemon {
        let t = CK_ATTRIBUTE_TYPE::from(*t);
        let v = if NUMBERS.contains(&t) {
            ulong(be_number(v))
        } else {
            v.clone()
        };
        m.insert(t, Value::Bytes(v));
    }
    m.insert(CKA_CLASS, Value::Bytes(ulong(class)));
    m.entry(CKA_LABEL).or_insert(Value::Bytes(Vec::new()));
    m.entry(CKA_ID).or_insert(Value::Bytes(Vec::new()));
    m.insert(CKA_TOKEN, b(true));
    m.insert(CKA_PRIVATE, b(class == CKO_PRIVATE_KEY));
    m.insert(CKA_MODIFIABLE, b(false));
    m.insert(CKA_COPYABLE, b(false));
    m.insert(CKA_DESTROYABLE, b(true));
    if class == CKO_CERTIFICATE {
        m.insert(CKA_CERTIFICATE_TYPE, Value::Bytes(ulong(CKC_X_509)));
        m.insert(CKA_TRUSTED, b(false));
        m.insert(CKA_CERTIFICATE_CATEGORY, Value::Bytes(ulong(0)));
        m.insert(CKA_JAVA_MIDP_SECURITY_DOMAIN, Value::Bytes(ulong(0)));
        for t in [
            CKA_START_DATE,
            CKA_END_DATE,
            CKA_URL,
            CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
            CKA_HASH_OF_ISSUER_PUBLIC_KEY,
            CKA_PUBLIC_KEY_INFO,
        ] {
            m.insert(t, Value::Bytes(Vec::new()));
        }
        for t in [CKA_SUBJECT, CKA_ISSUER, CKA_SERIAL_NUMBER, CKA_VALUE] {
            m.entry(t).or_insert(Value::Bytes(Vec::new()));
        }
        if let Some(Value::Bytes(der)) = m.get(&CKA_VALUE) {
            let check = sha1::Sha1::digest(der)[..3].to_vec();
            m.insert(CKA_CHECK_VALUE, Value::Bytes(check));
        }
        return m;
    }
    // Keys.
    m.insert(CKA_KEY_TYPE, Value::Bytes(ulong(CKK_RSA)));
    m.insert(CKA_DERIVE, b(false));
    m.insert(CKA_LOCAL, b(true));
    m.insert(
        CKA_KEY_GEN_MECHANISM,
        Value::Bytes(ulong(CKM_RSA_PKCS_KEY_PAIR_GEN)),
    );
    m.insert(
        CKA_ALLOWED_MECHANISMS,
        Value::Bytes(allowed_mechanisms(class)),
    );
    m.insert(CKA_START_DATE, Value::Bytes(Vec::new()));
    m.insert(CKA_END_DATE, Value::Bytes(Vec::new()));
    m.entry(CKA_SUBJECT).or_insert(Value::Bytes(Vec::new()));
    let spki = match (m.get(&CKA_MODULUS), m.get(&CKA_PUBLIC_EXPONENT)) {
        (Some(Value::Bytes(n)), Some(Value::Bytes(e))) => phonecsp::local::public_key(n, e)
            .ok()
            .and_then(|k| phonecsp::local::spki_der(&k).ok()),
        _ => None,
    };
    m.insert(CKA_PUBLIC_KEY_INFO, Value::Bytes(spki.unwrap_or_default()));
    if class == CKO_PRIVATE_KEY {
        m.insert(CKA_SENSITIVE, b(true));
        m.insert(CKA_ALWAYS_SENSITIVE, b(true));
        m.insert(CKA_EXTRACTABLE, b(false));
        m.insert(CKA_NEVER_EXTRACTABLE, b(true));
        m.insert(CKA_DECRYPT, b(true));
        m.insert(CKA_SIGN, b(true));
        m.insert(CKA_SIGN_RECOVER, b(false));
        m.insert(CKA_UNWRAP, b(false));
        m.insert(CKA_WRAP_WITH_TRUSTED, b(false));
        m.insert(CKA_ALWAYS_AUTHENTICATE, b(false));
        for t in SENSITIVE {
            m.insert(t, Value::Sensitive);
        }
    } else {
        m.insert(CKA_ENCRYPT, b(true));
        m.insert(CKA_VERIFY, b(true));
        m.insert(CKA_VERIFY_RECOVER, b(false));
        m.insert(CKA_WRAP, b(false));
        m.insert(CKA_TRUSTED, b(false));
    }
    m
}

/// Whether an object with these attributes matches a search template.
pub fn matches(attrs: &AttrMap, template: &Template) -> bool {
    template
        .iter()
        .all(|(t, want)| matches!(attrs.get(t), Some(Value::Bytes(v)) if v == want))
}

/// The attributes known from the object list alone, enough to match most
/// searches without asking the handset.
pub fn quick(class: CK_OBJECT_CLASS, id: &[u8], label: &str) -> AttrMap {
    let mut m = AttrMap::new();
    m.insert(CKA_CLASS, Value::Bytes(ulong(class)));
    m.insert(CKA_ID, Value::Bytes(id.to_vec()));
    m.insert(CKA_LABEL, Value::Bytes(label.as_bytes().to_vec()));
    m.insert(CKA_TOKEN, Value::Bytes(bbool(true)));
    m.insert(CKA_PRIVATE, Value::Bytes(bbool(class == CKO_PRIVATE_KEY)));
    if class != CKO_CERTIFICATE {
        m.insert(CKA_KEY_TYPE, Value::Bytes(ulong(CKK_RSA)));
    } else {
        m.insert(CKA_CERTIFICATE_TYPE, Value::Bytes(ulong(CKC_X_509)));
    }
    m
}

/// Whether [`quick`] answers every attribute of the template.
pub fn quick_suffices(template: &Template) -> bool {
    template.iter().all(|(t, _)| {
        matches!(
            *t,
            CKA_CLASS | CKA_ID | CKA_LABEL | CKA_TOKEN | CKA_PRIVATE | CKA_KEY_TYPE
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon_key() -> HashMap<u32, Vec<u8>> {
        let mut d = HashMap::new();
        d.insert(CKA_CLASS as u32, 3u64.to_be_bytes().to_vec());
        d.insert(CKA_ID as u32, vec![1]);
        d.insert(CKA_LABEL as u32, b"ssh key".to_vec());
        d.insert(CKA_MODULUS_BITS as u32, 2048u64.to_be_bytes().to_vec());
        d.insert(CKA_MODULUS as u32, vec![0xC1; 256]);
        d.insert(CKA_PUBLIC_EXPONENT as u32, vec![1, 0, 1]);
        d
    }

    #[test]
    fn private_keys_are_sensitive_and_carry_their_public_parts() {
        let m = build(CKO_PRIVATE_KEY, &daemon_key());
        assert_eq!(m[&CKA_CLASS], Value::Bytes(ulong(CKO_PRIVATE_KEY)));
        assert_eq!(m[&CKA_MODULUS_BITS], Value::Bytes(ulong(2048)));
        assert_eq!(m[&CKA_SENSITIVE], Value::Bytes(vec![1]));
        assert_eq!(m[&CKA_EXTRACTABLE], Value::Bytes(vec![0]));
        assert_eq!(m[&CKA_PRIVATE_EXPONENT], Value::Sensitive);
        assert!(matches!(&m[&CKA_PUBLIC_KEY_INFO], Value::Bytes(v) if v.len() > 256));
        let t: Template = vec![(CKA_CLASS, ulong(CKO_PRIVATE_KEY)), (CKA_ID, vec![1])];
        assert!(matches(&m, &t));
        assert!(!matches(&m, &vec![(CKA_ID, vec![2])]));
        assert!(!matches(&m, &vec![(CKA_PRIVATE_EXPONENT, vec![2])]));
        assert!(matches(&quick(CKO_PRIVATE_KEY, &[1], "ssh key"), &t));
        assert!(quick_suffices(&t));
        assert!(!quick_suffices(&vec![(CKA_SIGN, vec![1])]));
    }

    #[test]
    fn template_values() {
        assert_eq!(as_ulong(&ulong(7)).unwrap(), 7);
        assert!(as_ulong(&[1, 2]).is_err());
        assert!(as_bool(&[1]).unwrap());
        assert!(as_bool(&[]).is_err());
    }
}
