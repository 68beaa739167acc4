//! Objects as PKCS#11 sees them: the attributes of a handset's private
//! key, public key and certificate, built from what the daemon reports
//! (numbers there are 8-byte big-endian; here they are native `CK_ULONG`s)
//! plus the fixed facts of a handset key (sensitive, never extractable,
//! generated on the token). Also the templates callers give: their shape,
//! and the session objects made from them, checked as the standard
//! assigns its errors.

use std::collections::{BTreeMap, HashMap};

use cryptoki_sys::*;
use sha1::Digest;
use zeroize::Zeroize;

use crate::error::{Error, Result, fail};
use crate::mechanisms;

/// One attribute's value, or the fact that it is sensitive. Wiped when
/// dropped: a session secret key's value is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bytes(Vec<u8>),
    Sensitive,
}

impl Drop for Value {
    fn drop(&mut self) {
        if let Value::Bytes(v) = self {
            v.zeroize();
        }
    }
}

/// A caller's template that may hold a secret key's value, wiped when
/// dropped.
pub struct Wiped(pub Template);

impl Drop for Wiped {
    fn drop(&mut self) {
        for (_, v) in self.0.iter_mut() {
            v.zeroize();
        }
    }
}

impl std::ops::Deref for Wiped {
    type Target = Template;

    fn deref(&self) -> &Template {
        &self.0
    }
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

fn allowed_mechanisms(class: CK_OBJECT_CLASS, key_type: CK_KEY_TYPE) -> Vec<u8> {
    let want = if class == CKO_PRIVATE_KEY {
        CKF_SIGN | CKF_DECRYPT | CKF_DERIVE
    } else {
        CKF_VERIFY | CKF_ENCRYPT
    };
    // Each key type's mechanisms, by their key sizes in the table.
    let of_type = |min: CK_ULONG| match key_type {
        CKK_EC => min == mechanisms::EC_MIN_BITS,
        CKK_EC_EDWARDS => min == mechanisms::ED25519_BITS,
        _ => min == mechanisms::MIN_BITS,
    };
    mechanisms::all()
        .filter(|(_, min, _, f)| f & want != 0 && of_type(*min))
        .flat_map(|(m, ..)| m.to_ne_bytes())
        .collect()
}

/// An RSA private key object's template (`C_CreateObject`, PKCS#11 2.40
/// section 2.1.3) as unencrypted PKCS#8 DER, in a wiped buffer, for the
/// phone. `CKA_MODULUS`, `CKA_PUBLIC_EXPONENT` and `CKA_PRIVATE_EXPONENT`
/// are needed (the standard makes the public exponent optional; without it
/// there is no public key to give: `CKR_TEMPLATE_INCOMPLETE`); the primes
/// are used when given and found from the three otherwise; the CRT values
/// are computed again. A key of another type is
/// `CKR_ATTRIBUTE_VALUE_INVALID`, as is one that asks to be extractable or
/// not sensitive (the phone gives no private key out), or values that are
/// not a consistent RSA key.
pub fn private_key_pkcs8(template: &Template) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    use rsa::BigUint;
    use rsa::pkcs8::EncodePrivateKey;
    let key_type = find(template, CKA_KEY_TYPE)
        .ok_or(Error::Rv(CKR_TEMPLATE_INCOMPLETE))
        .and_then(as_ulong)?;
    if key_type != CKK_RSA && key_type != CKK_EC && key_type != CKK_EC_EDWARDS {
        return fail(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    if let Some(v) = find(template, CKA_EXTRACTABLE)
        && as_bool(v)?
    {
        return fail(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    if let Some(v) = find(template, CKA_SENSITIVE)
        && !as_bool(v)?
    {
        return fail(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    if key_type != CKK_RSA {
        return ec_private_key_pkcs8(template, key_type);
    }
    let number = |t| {
        find(template, t)
            .filter(|v| !v.is_empty())
            .map(BigUint::from_bytes_be)
    };
    let need = |t| number(t).ok_or(Error::Rv(CKR_TEMPLATE_INCOMPLETE));
    // CKR_KEY_SIZE_RANGE, the phone's answer, is not among C_CreateObject's
    // return values: a size the phone does not hold is a value it refuses.
    if let Some(n) = number(CKA_MODULUS)
        && !phonecsp_protocol::ck::RSA_KEY_BITS.contains(&(n.bits() as u32))
    {
        return fail(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    let (n, e, d) = (
        need(CKA_MODULUS)?,
        need(CKA_PUBLIC_EXPONENT)?,
        need(CKA_PRIVATE_EXPONENT)?,
    );
    let primes = match (number(CKA_PRIME_1), number(CKA_PRIME_2)) {
        (Some(p), Some(q)) => vec![p, q],
        (None, None) => Vec::new(),
        _ => return fail(CKR_TEMPLATE_INCOMPLETE),
    };
    let invalid = |_| Error::Rv(CKR_ATTRIBUTE_VALUE_INVALID);
    let key = rsa::RsaPrivateKey::from_components(n, e, d, primes).map_err(invalid)?;
    key.validate().map_err(invalid)?;
    let der = key
        .to_pkcs8_der()
        .map_err(|_| Error::Rv(CKR_ATTRIBUTE_VALUE_INVALID))?;
    Ok(der.to_bytes())
}

/// An EC private key's template as PKCS#8: `CKA_EC_PARAMS` (missing:
/// `CKR_TEMPLATE_INCOMPLETE`) names P-256 or P-384 for `CKK_EC`, Ed25519
/// for `CKK_EC_EDWARDS` (another curve: `CKR_CURVE_NOT_SUPPORTED`, which
/// PKCS#11 lists for `C_CreateObject`; the other kind's curve:
/// `CKR_TEMPLATE_INCONSISTENT`), and `CKA_VALUE` is the private value
/// (missing: `CKR_TEMPLATE_INCOMPLETE`; not a key of the curve:
/// `CKR_ATTRIBUTE_VALUE_INVALID`).
fn ec_private_key_pkcs8(
    template: &Template,
    key_type: CK_KEY_TYPE,
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let params = find(template, CKA_EC_PARAMS).ok_or(Error::Rv(CKR_TEMPLATE_INCOMPLETE))?;
    let curve = phonecsp_protocol::Curve::from_ec_params(params)
        .ok_or(Error::Rv(CKR_CURVE_NOT_SUPPORTED))?;
    if CK_KEY_TYPE::from(curve.key_type()) != key_type {
        return fail(CKR_TEMPLATE_INCONSISTENT);
    }
    let value = find(template, CKA_VALUE)
        .filter(|v| !v.is_empty())
        .ok_or(Error::Rv(CKR_TEMPLATE_INCOMPLETE))?;
    phonecsp::local::ec_private_key_pkcs8(curve, value).map_err(Error::from)
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
    if class == CKO_DATA {
        // The phone's id names the object on the link; a data object has
        // no CKA_ID.
        m.remove(&CKA_ID);
        for t in [CKA_APPLICATION, CKA_OBJECT_ID, CKA_VALUE] {
            m.entry(t).or_insert(Value::Bytes(Vec::new()));
        }
        return m;
    }
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
    // Keys: RSA unless the handset says EC (CKA_EC_PARAMS).
    let key_type = match daemon.get(&(CKA_KEY_TYPE as u32)) {
        Some(v) if m.contains_key(&CKA_EC_PARAMS) => be_number(v),
        _ => CKK_RSA,
    };
    let ec = key_type != CKK_RSA;
    m.insert(CKA_KEY_TYPE, Value::Bytes(ulong(key_type)));
    // ECDH is a NIST-curve key's; RSA and Ed25519 keys derive nothing.
    m.insert(
        CKA_DERIVE,
        b(key_type == CKK_EC && class == CKO_PRIVATE_KEY),
    );
    // The phone says whether a key was made there (a key imported from
    // elsewhere is not); a phone of before imports says nothing, and all
    // its keys were.
    let local = !matches!(m.get(&CKA_LOCAL), Some(Value::Bytes(v)) if v.as_slice() == [0]);
    for t in [CKA_NEVER_EXTRACTABLE, CKA_ALWAYS_SENSITIVE] {
        m.remove(&t);
    }
    m.insert(CKA_LOCAL, b(local));
    // The standard's value for a key not generated on the token.
    let generation = match key_type {
        _ if !local => CK_UNAVAILABLE_INFORMATION,
        CKK_EC => CKM_EC_KEY_PAIR_GEN,
        CKK_EC_EDWARDS => CKM_EC_EDWARDS_KEY_PAIR_GEN,
        _ => CKM_RSA_PKCS_KEY_PAIR_GEN,
    };
    m.insert(CKA_KEY_GEN_MECHANISM, Value::Bytes(ulong(generation)));
    m.insert(
        CKA_ALLOWED_MECHANISMS,
        Value::Bytes(allowed_mechanisms(class, key_type)),
    );
    m.insert(CKA_START_DATE, Value::Bytes(Vec::new()));
    m.insert(CKA_END_DATE, Value::Bytes(Vec::new()));
    m.entry(CKA_SUBJECT).or_insert(Value::Bytes(Vec::new()));
    let spki = phonecsp::local::any_public_key_from_attributes(daemon.iter())
        .ok()
        .and_then(|k| k.spki_der().ok());
    m.insert(CKA_PUBLIC_KEY_INFO, Value::Bytes(spki.unwrap_or_default()));
    if class == CKO_PRIVATE_KEY {
        m.insert(CKA_SENSITIVE, b(true));
        m.insert(CKA_ALWAYS_SENSITIVE, b(local));
        m.insert(CKA_EXTRACTABLE, b(false));
        m.insert(CKA_NEVER_EXTRACTABLE, b(local));
        m.insert(CKA_DECRYPT, b(!ec));
        m.insert(CKA_SIGN, b(true));
        m.insert(CKA_SIGN_RECOVER, b(false));
        // Unwrapping is the phone's RSA decryption, kept here as a secret key.
        m.insert(CKA_UNWRAP, b(!ec));
        m.insert(CKA_WRAP_WITH_TRUSTED, b(false));
        m.insert(CKA_ALWAYS_AUTHENTICATE, b(false));
        // An EC private key's secret is CKA_VALUE alone.
        for t in SENSITIVE.into_iter().filter(|t| !ec || *t == CKA_VALUE) {
            m.insert(t, Value::Sensitive);
        }
    } else {
        m.insert(CKA_ENCRYPT, b(!ec));
        m.insert(CKA_VERIFY, b(true));
        m.insert(CKA_VERIFY_RECOVER, b(false));
        m.insert(CKA_WRAP, b(!ec));
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
    m.insert(CKA_LABEL, Value::Bytes(label.as_bytes().to_vec()));
    m.insert(CKA_TOKEN, Value::Bytes(bbool(true)));
    m.insert(CKA_PRIVATE, Value::Bytes(bbool(class == CKO_PRIVATE_KEY)));
    match class {
        CKO_DATA => {}
        CKO_CERTIFICATE => {
            m.insert(CKA_ID, Value::Bytes(id.to_vec()));
            m.insert(CKA_CERTIFICATE_TYPE, Value::Bytes(ulong(CKC_X_509)));
        }
        // A key's type is not in the list (it may be EC): a search by it
        // reads the attributes.
        _ => {
            m.insert(CKA_ID, Value::Bytes(id.to_vec()));
        }
    }
    m
}

/// Whether [`quick`] answers every attribute of the template.
pub fn quick_suffices(template: &Template) -> bool {
    template
        .iter()
        .all(|(t, _)| matches!(*t, CKA_CLASS | CKA_ID | CKA_LABEL | CKA_TOKEN | CKA_PRIVATE))
}

// ---- objects made from a caller's template ----------------------------------

/// Attributes no caller sets: the module or the standard decides them.
const READ_ONLY: [CK_ATTRIBUTE_TYPE; 8] = [
    CKA_LOCAL,
    CKA_KEY_GEN_MECHANISM,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_MODULUS_BITS,
    CKA_CHECK_VALUE,
    CKA_VALUE_LEN,
    CKA_PUBLIC_KEY_INFO,
];

/// Attributes every object has, with their defaults.
fn common(class: CK_OBJECT_CLASS) -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    vec![
        (CKA_CLASS, ulong(class)),
        (CKA_TOKEN, bbool(false)),
        (CKA_PRIVATE, bbool(class == CKO_SECRET_KEY)),
        (CKA_MODIFIABLE, bbool(true)),
        (CKA_COPYABLE, bbool(true)),
        (CKA_DESTROYABLE, bbool(true)),
        (CKA_LABEL, Vec::new()),
    ]
}

/// The attributes an object of `class` may be given, with their defaults
/// (`None`: required).
fn settable(class: CK_OBJECT_CLASS) -> Result<Vec<(CK_ATTRIBUTE_TYPE, Option<Vec<u8>>)>> {
    let b = |v: bool| Some(bbool(v));
    let e = || Some(Vec::new());
    Ok(match class {
        CKO_DATA => vec![
            (CKA_APPLICATION, e()),
            (CKA_OBJECT_ID, e()),
            (CKA_VALUE, e()),
        ],
        CKO_CERTIFICATE => vec![
            (CKA_CERTIFICATE_TYPE, Some(ulong(CKC_X_509))),
            (CKA_TRUSTED, b(false)),
            (CKA_CERTIFICATE_CATEGORY, Some(ulong(0))),
            (CKA_START_DATE, e()),
            (CKA_END_DATE, e()),
            (CKA_SUBJECT, e()),
            (CKA_ID, e()),
            (CKA_ISSUER, e()),
            (CKA_SERIAL_NUMBER, e()),
            (CKA_URL, e()),
            (CKA_HASH_OF_SUBJECT_PUBLIC_KEY, e()),
            (CKA_HASH_OF_ISSUER_PUBLIC_KEY, e()),
            (CKA_JAVA_MIDP_SECURITY_DOMAIN, Some(ulong(0))),
            (CKA_VALUE, None),
        ],
        CKO_PUBLIC_KEY => {
            let mut v = key_common();
            v.extend([
                (CKA_SUBJECT, e()),
                (CKA_ENCRYPT, b(true)),
                (CKA_VERIFY, b(true)),
                (CKA_VERIFY_RECOVER, b(false)),
                (CKA_WRAP, b(true)),
                (CKA_TRUSTED, b(false)),
                (CKA_MODULUS, None),
                (CKA_PUBLIC_EXPONENT, None),
            ]);
            v
        }
        CKO_SECRET_KEY => {
            let mut v = key_common();
            v.extend([
                (CKA_SENSITIVE, b(true)),
                (CKA_ENCRYPT, b(true)),
                (CKA_DECRYPT, b(true)),
                (CKA_SIGN, b(false)),
                (CKA_VERIFY, b(false)),
                (CKA_WRAP, b(false)),
                (CKA_UNWRAP, b(false)),
                (CKA_EXTRACTABLE, b(false)),
                (CKA_WRAP_WITH_TRUSTED, b(false)),
                (CKA_TRUSTED, b(false)),
                (CKA_VALUE, None),
            ]);
            v
        }
        // The phone holds the private keys; none is made from a template.
        _ => return fail(CKR_ATTRIBUTE_VALUE_INVALID),
    })
}

fn key_common() -> Vec<(CK_ATTRIBUTE_TYPE, Option<Vec<u8>>)> {
    vec![
        (CKA_KEY_TYPE, None),
        (CKA_ID, Some(Vec::new())),
        (CKA_START_DATE, Some(Vec::new())),
        (CKA_END_DATE, Some(Vec::new())),
        (CKA_DERIVE, Some(bbool(false))),
        (CKA_ALLOWED_MECHANISMS, Some(Vec::new())),
    ]
}

/// Attributes whose value is a `CK_BBOOL`.
const BOOLS: [CK_ATTRIBUTE_TYPE; 20] = [
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_TRUSTED,
    CKA_DERIVE,
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_EXTRACTABLE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_LOCAL,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
];

/// Attributes whose value is a `CK_ULONG`.
const ULONGS: [CK_ATTRIBUTE_TYPE; 5] = [
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_CERTIFICATE_TYPE,
    CKA_CERTIFICATE_CATEGORY,
    CKA_JAVA_MIDP_SECURITY_DOMAIN,
];

/// The largest value of any attribute the module keeps for a caller.
pub const MAX_VALUE_LEN: usize = phonecsp_protocol::limits::MAX_DER_LEN;

/// Checks a template's shape: no attribute twice with different values
/// (`CKR_TEMPLATE_INCONSISTENT`), booleans and numbers of their sizes and
/// no value beyond [`MAX_VALUE_LEN`] (`CKR_ATTRIBUTE_VALUE_INVALID`).
pub fn check_shape(template: &Template) -> Result<()> {
    for (i, (t, v)) in template.iter().enumerate() {
        if template[..i].iter().any(|(u, w)| u == t && w != v) {
            return fail(CKR_TEMPLATE_INCONSISTENT);
        }
        if BOOLS.contains(t) {
            as_bool(v)?;
        }
        if ULONGS.contains(t) {
            as_ulong(v)?;
        }
        if v.len() > MAX_VALUE_LEN {
            return fail(CKR_ATTRIBUTE_VALUE_INVALID);
        }
    }
    Ok(())
}

/// A template's `CKA_TOKEN`, false unless given true, as the standard's
/// default is.
pub fn is_token(template: &Template) -> Result<bool> {
    find(template, CKA_TOKEN).map_or(Ok(false), as_bool)
}

/// A template's `CKA_PRIVATE` as the object would have it: a secret key
/// is private unless it says otherwise, other objects public.
pub fn is_private(template: &Template) -> Result<bool> {
    match find(template, CKA_PRIVATE) {
        Some(v) => as_bool(v),
        None => Ok(find(template, CKA_CLASS).map(as_ulong).transpose()? == Some(CKO_SECRET_KEY)),
    }
}

/// The attributes of a session object made by `C_CreateObject` from a
/// caller's template, checked as the standard says: `CKA_CLASS` and each
/// class's required attributes must be there (`CKR_TEMPLATE_INCOMPLETE`),
/// an attribute the class does not have is `CKR_ATTRIBUTE_TYPE_INVALID`,
/// one the module decides `CKR_ATTRIBUTE_READ_ONLY`, and values must be
/// valid (`CKR_ATTRIBUTE_VALUE_INVALID`).
pub fn from_template(template: &Template) -> Result<AttrMap> {
    check_shape(template)?;
    let class = find(template, CKA_CLASS)
        .ok_or(Error::Rv(CKR_TEMPLATE_INCOMPLETE))
        .and_then(as_ulong)?;
    let fields = settable(class)?;
    let mut m = AttrMap::new();
    for (t, v) in common(class).into_iter() {
        m.insert(t, Value::Bytes(find(template, t).map_or(v, <[u8]>::to_vec)));
    }
    for (t, default) in &fields {
        let v = match (find(template, *t), default) {
            (Some(v), _) => v.to_vec(),
            (None, Some(d)) => d.clone(),
            (None, None) => return fail(CKR_TEMPLATE_INCOMPLETE),
        };
        m.insert(*t, Value::Bytes(v));
    }
    for (t, _) in template {
        if READ_ONLY.contains(t) {
            return fail(CKR_ATTRIBUTE_READ_ONLY);
        }
        if !m.contains_key(t) {
            return fail(CKR_ATTRIBUTE_TYPE_INVALID);
        }
    }
    match class {
        CKO_CERTIFICATE if get_ulong(&m, CKA_CERTIFICATE_TYPE) != Some(CKC_X_509) => {
            return fail(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        CKO_PUBLIC_KEY => public_key_facts(&mut m)?,
        CKO_SECRET_KEY => secret_key_facts(&mut m, false)?,
        _ => {}
    }
    Ok(m)
}

fn get_ulong(m: &AttrMap, t: CK_ATTRIBUTE_TYPE) -> Option<CK_ULONG> {
    match m.get(&t) {
        Some(Value::Bytes(v)) => as_ulong(v).ok(),
        _ => None,
    }
}

/// Whether a boolean attribute is true.
pub fn is_true(m: &AttrMap, t: CK_ATTRIBUTE_TYPE) -> bool {
    m.get(&t) == Some(&Value::Bytes(bbool(true)))
}

/// An RSA public key's derived attributes: its size and SPKI.
fn public_key_facts(m: &mut AttrMap) -> Result<()> {
    if get_ulong(m, CKA_KEY_TYPE) != Some(CKK_RSA) {
        return fail(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    let key = match (m.get(&CKA_MODULUS), m.get(&CKA_PUBLIC_EXPONENT)) {
        (Some(Value::Bytes(n)), Some(Value::Bytes(e))) => {
            phonecsp::local::public_key(n, e).or_else(|_| fail(CKR_ATTRIBUTE_VALUE_INVALID))?
        }
        _ => return fail(CKR_TEMPLATE_INCOMPLETE),
    };
    use rsa::traits::PublicKeyParts;
    m.insert(
        CKA_MODULUS_BITS,
        Value::Bytes(ulong((key.size() * 8) as CK_ULONG)),
    );
    let spki = phonecsp::local::spki_der(&key).unwrap_or_default();
    m.insert(CKA_PUBLIC_KEY_INFO, Value::Bytes(spki));
    m.insert(CKA_LOCAL, Value::Bytes(bbool(false)));
    m.insert(
        CKA_KEY_GEN_MECHANISM,
        Value::Bytes(ulong(CK_UNAVAILABLE_INFORMATION)),
    );
    Ok(())
}

/// The key types a secret key may have, and the value lengths each takes.
pub fn secret_key_lengths(key_type: CK_KEY_TYPE) -> Option<&'static [usize]> {
    match key_type {
        CKK_AES => Some(&[16, 24, 32]),
        CKK_DES3 => Some(&[24]),
        CKK_GENERIC_SECRET => Some(&[]),
        _ => None,
    }
}

/// A secret key's derived attributes; `local`: made here (generated or
/// unwrapped) rather than given by the caller.
pub fn secret_key_facts(m: &mut AttrMap, local: bool) -> Result<()> {
    let lengths = get_ulong(m, CKA_KEY_TYPE)
        .and_then(secret_key_lengths)
        .ok_or(Error::Rv(CKR_ATTRIBUTE_VALUE_INVALID))?;
    let Some(Value::Bytes(v)) = m.get(&CKA_VALUE) else {
        return fail(CKR_TEMPLATE_INCOMPLETE);
    };
    let len = v.len();
    if (lengths.is_empty() && (len == 0 || len > 512))
        || (!lengths.is_empty() && !lengths.contains(&len))
    {
        return fail(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    m.insert(CKA_VALUE_LEN, Value::Bytes(ulong(len as CK_ULONG)));
    let sensitive = is_true(m, CKA_SENSITIVE);
    let extractable = is_true(m, CKA_EXTRACTABLE);
    m.insert(CKA_LOCAL, Value::Bytes(bbool(local)));
    m.insert(
        CKA_ALWAYS_SENSITIVE,
        Value::Bytes(bbool(local && sensitive)),
    );
    m.insert(
        CKA_NEVER_EXTRACTABLE,
        Value::Bytes(bbool(local && !extractable)),
    );
    m.insert(
        CKA_KEY_GEN_MECHANISM,
        Value::Bytes(ulong(CK_UNAVAILABLE_INFORMATION)),
    );
    Ok(())
}

/// The attributes a caller reads: a secret key's value is sensitive
/// when the key is sensitive or not extractable.
pub fn readable(m: &AttrMap) -> AttrMap {
    let mut out = m.clone();
    if get_ulong(m, CKA_CLASS) == Some(CKO_SECRET_KEY)
        && (is_true(m, CKA_SENSITIVE) || !is_true(m, CKA_EXTRACTABLE))
    {
        out.insert(CKA_VALUE, Value::Sensitive);
    }
    out
}

/// The attributes `C_CopyObject` and `C_SetAttributeValue` may change.
pub const CHANGEABLE: [CK_ATTRIBUTE_TYPE; 6] = [
    CKA_LABEL,
    CKA_ID,
    CKA_APPLICATION,
    CKA_SUBJECT,
    CKA_START_DATE,
    CKA_END_DATE,
];

/// `template` applied over `m`, for `C_CopyObject` (`copy`, which may also
/// change `CKA_TOKEN`, `CKA_PRIVATE` and `CKA_MODIFIABLE`) or
/// `C_SetAttributeValue`. Attributes the object lacks are
/// `CKR_ATTRIBUTE_TYPE_INVALID`, others not to be changed
/// `CKR_ATTRIBUTE_READ_ONLY`.
pub fn changed(m: &AttrMap, template: &Template, copy: bool) -> Result<AttrMap> {
    check_shape(template)?;
    let mut out = m.clone();
    for (t, v) in template {
        let Some(Value::Bytes(old)) = m.get(t) else {
            return fail(match m.get(t) {
                Some(Value::Sensitive) => CKR_ATTRIBUTE_READ_ONLY,
                _ => CKR_ATTRIBUTE_TYPE_INVALID,
            });
        };
        let may = CHANGEABLE.contains(t)
            || (copy && matches!(*t, CKA_TOKEN | CKA_PRIVATE | CKA_MODIFIABLE))
            // Sensitivity only grows; extractability only ends.
            || (*t == CKA_SENSITIVE && as_bool(v)?)
            || (*t == CKA_EXTRACTABLE && !as_bool(v)?)
            || old == v;
        if !may {
            return fail(CKR_ATTRIBUTE_READ_ONLY);
        }
        out.insert(*t, Value::Bytes(v.clone()));
    }
    Ok(out)
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

    /// Issue 15, item 3: an EC private key's template becomes the PKCS#8
    /// of its curve; a missing, unsupported or inconsistent curve and a
    /// value that is no key are refused with the standard's values.
    #[test]
    fn ec_private_key_templates_become_pkcs8() {
        use phonecsp_protocol::Curve;
        let template = |key_type, params: &[u8], value: &[u8]| -> Template {
            vec![
                (CKA_CLASS, ulong(CKO_PRIVATE_KEY)),
                (CKA_KEY_TYPE, ulong(key_type)),
                (CKA_EC_PARAMS, params.to_vec()),
                (CKA_VALUE, value.to_vec()),
            ]
        };
        let p256 = Curve::P256.ec_params();
        let ed = Curve::Ed25519.ec_params();
        for (key_type, params, value) in [
            (CKK_EC, p256, &[7u8; 32][..]),
            // A short scalar is its value.
            (CKK_EC, p256, &[7u8; 3][..]),
            (CKK_EC, Curve::P384.ec_params(), &[9u8; 48][..]),
            (CKK_EC_EDWARDS, ed, &[1u8; 32][..]),
        ] {
            let der = private_key_pkcs8(&template(key_type, params, value)).unwrap();
            let curve = phonecsp::local::pkcs8_curve(&der).unwrap().unwrap();
            assert_eq!(curve.ec_params(), params);
        }
        // secp256k1 (1.3.132.0.10).
        let k1 = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
        let rv = |t: Template| match private_key_pkcs8(&t) {
            Err(e) => e.rv(),
            Ok(_) => CKR_OK,
        };
        assert_eq!(rv(template(CKK_EC, &k1, &[7; 32])), CKR_CURVE_NOT_SUPPORTED);
        assert_eq!(
            rv(template(CKK_EC, ed, &[7; 32])),
            CKR_TEMPLATE_INCONSISTENT
        );
        assert_eq!(
            rv(template(CKK_EC_EDWARDS, p256, &[7; 32])),
            CKR_TEMPLATE_INCONSISTENT
        );
        for bad in [&[0u8; 32][..], &[0xff; 32], &[7; 33]] {
            assert_eq!(rv(template(CKK_EC, p256, bad)), CKR_ATTRIBUTE_VALUE_INVALID);
        }
        assert_eq!(
            rv(template(CKK_EC_EDWARDS, ed, &[7; 31])),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(rv(template(CKK_EC, p256, &[])), CKR_TEMPLATE_INCOMPLETE);
        let mut no_params = template(CKK_EC, p256, &[7; 32]);
        no_params.retain(|(t, _)| *t != CKA_EC_PARAMS);
        assert_eq!(rv(no_params), CKR_TEMPLATE_INCOMPLETE);
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

    /// An EC key as the daemon gives it (the handset's `+CKATTR`): the
    /// object says its type, curve, point and SPKI, derives (NIST curves,
    /// private key) but neither decrypts nor wraps, and lists only its own
    /// mechanisms; a search by key type reads it, the object list alone
    /// cannot answer that.
    #[test]
    fn ec_keys_carry_their_curve_and_their_own_mechanisms() {
        use phonecsp_protocol::ck::Curve;
        let ec = |curve: Curve, point: &[u8]| {
            let mut d = HashMap::new();
            d.insert(CKA_CLASS as u32, 3u64.to_be_bytes().to_vec());
            d.insert(CKA_ID as u32, vec![5]);
            d.insert(
                CKA_KEY_TYPE as u32,
                u64::from(curve.key_type()).to_be_bytes().to_vec(),
            );
            d.insert(CKA_EC_PARAMS as u32, curve.ec_params().to_vec());
            d.insert(CKA_EC_POINT as u32, Curve::ec_point_der(point));
            d
        };
        // The P-256 generator: a valid point.
        let g = [
            "04",
            "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        ]
        .concat();
        let point: Vec<u8> = (0..g.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&g[i..i + 2], 16).unwrap())
            .collect();
        let private = build(CKO_PRIVATE_KEY, &ec(Curve::P256, &point));
        let public = build(CKO_PUBLIC_KEY, &ec(Curve::P256, &point));
        let b = |v: bool| Value::Bytes(bbool(v));
        assert_eq!(private[&CKA_KEY_TYPE], Value::Bytes(ulong(CKK_EC)));
        assert_eq!(
            private[&CKA_KEY_GEN_MECHANISM],
            Value::Bytes(ulong(CKM_EC_KEY_PAIR_GEN))
        );
        assert_eq!(private[&CKA_DERIVE], b(true));
        assert_eq!(public[&CKA_DERIVE], b(false));
        for t in [CKA_DECRYPT, CKA_UNWRAP] {
            assert_eq!(private[&t], b(false));
        }
        for t in [CKA_ENCRYPT, CKA_WRAP] {
            assert_eq!(public[&t], b(false));
        }
        assert_eq!(private[&CKA_VALUE], Value::Sensitive);
        assert!(!private.contains_key(&CKA_PRIME_1));
        assert!(matches!(&public[&CKA_PUBLIC_KEY_INFO], Value::Bytes(v) if v.len() == 91));
        let Value::Bytes(allowed) = &private[&CKA_ALLOWED_MECHANISMS] else {
            panic!()
        };
        let allowed: Vec<CK_ULONG> = allowed
            .chunks(std::mem::size_of::<CK_ULONG>())
            .map(|c| CK_ULONG::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert!(allowed.contains(&CKM_ECDSA) && allowed.contains(&CKM_ECDH1_DERIVE));
        assert!(!allowed.contains(&CKM_RSA_PKCS) && !allowed.contains(&CKM_EDDSA));
        let ed = build(CKO_PRIVATE_KEY, &ec(Curve::Ed25519, &[9; 32]));
        assert_eq!(ed[&CKA_KEY_TYPE], Value::Bytes(ulong(CKK_EC_EDWARDS)));
        assert_eq!(ed[&CKA_DERIVE], b(false));
        assert!(!quick_suffices(&vec![(CKA_KEY_TYPE, ulong(CKK_EC))]));
    }

    #[test]
    fn template_values() {
        assert_eq!(as_ulong(&ulong(7)).unwrap(), 7);
        assert!(as_ulong(&[1, 2]).is_err());
        assert!(as_bool(&[1]).unwrap());
        assert!(as_bool(&[]).is_err());
    }
}
