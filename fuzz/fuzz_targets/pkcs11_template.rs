//! The PKCS#11 module's template decoding, from real `CK_ATTRIBUTE`
//! arrays built from the input, through `ffi::decode_templates`: the
//! template read from the caller's array (`C_CreateObject`,
//! `C_SetAttributeValue`, `C_CopyObject`, `C_FindObjectsInit` all read it
//! the same way) and checked as `C_CreateObject` checks a session object;
//! failing that, an object built from the daemon's attributes (8-byte
//! big-endian numbers) as for a handset's key, certificate or data object;
//! a second template matched against the object and applied over it; and
//! the object answered into a third template as `C_GetAttributeValue`
//! answers. Every buffer is allocated at exactly the size the array
//! claims, so AddressSanitizer reports any read or write past one. Nothing
//! may panic; no answered length may exceed its buffer; a length query (a
//! NULL buffer) must give the length that a buffer of that size then
//! receives.
#![no_main]

use std::collections::HashMap;

use cryptoki_sys::*;
use libfuzzer_sys::fuzz_target;
use phonecsp_pkcs11::ffi::decode_templates;

/// The attribute types the module knows, picked by a byte below their
/// count; other bytes give a raw type.
const TYPES: [CK_ATTRIBUTE_TYPE; 45] = [
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_APPLICATION,
    CKA_VALUE,
    CKA_OBJECT_ID,
    CKA_CERTIFICATE_TYPE,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_KEY_TYPE,
    CKA_SUBJECT,
    CKA_ID,
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_PRIVATE_EXPONENT,
    CKA_VALUE_LEN,
    CKA_EXTRACTABLE,
    CKA_LOCAL,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_TRUSTED,
    CKA_CERTIFICATE_CATEGORY,
    CKA_JAVA_MIDP_SECURITY_DOMAIN,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_DERIVE,
    CKA_ALLOWED_MECHANISMS,
    CKA_PUBLIC_KEY_INFO,
    CKA_KEY_GEN_MECHANISM,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_CHECK_VALUE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_URL,
];

const CLASSES: [CK_OBJECT_CLASS; 5] = [
    CKO_DATA,
    CKO_CERTIFICATE,
    CKO_PUBLIC_KEY,
    CKO_PRIVATE_KEY,
    CKO_SECRET_KEY,
];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head.to_vec()
    }

    fn attribute_type(&mut self) -> CK_ATTRIBUTE_TYPE {
        let b = self.byte();
        match TYPES.get(usize::from(b)) {
            Some(&t) => t,
            None if b == 255 => CK_ATTRIBUTE_TYPE::from(u32::from_le_bytes([
                self.byte(),
                self.byte(),
                self.byte(),
                self.byte(),
            ])),
            None => CKA_VENDOR_DEFINED | CK_ATTRIBUTE_TYPE::from(b),
        }
    }

    /// A value: `None` is a NULL pointer with a length.
    fn value(&mut self) -> (Option<Vec<u8>>, CK_ULONG) {
        let kind = self.byte();
        let v = match kind % 6 {
            0 => CK_ULONG::from(self.byte()).to_ne_bytes().to_vec(),
            1 => CLASSES[usize::from(self.byte()) % CLASSES.len()]
                .to_ne_bytes()
                .to_vec(),
            2 => vec![self.byte()],
            3 => return (None, CK_ULONG::from(self.byte())),
            4 => {
                let n = usize::from(u16::from_be_bytes([self.byte(), self.byte()]));
                self.bytes(n)
            }
            _ => {
                let n = usize::from(self.byte());
                self.bytes(n)
            }
        };
        let len = v.len() as CK_ULONG;
        (Some(v), len)
    }
}

/// A caller's template: the `CK_ATTRIBUTE`s and the buffers they point at.
struct Template {
    attrs: Vec<CK_ATTRIBUTE>,
    _buffers: Vec<Vec<u8>>,
}

fn template(input: &mut Input) -> Template {
    let n = usize::from(input.byte() % 12);
    let mut attrs = Vec::with_capacity(n);
    let mut buffers = Vec::with_capacity(n);
    for _ in 0..n {
        let type_ = input.attribute_type();
        let (v, len) = input.value();
        let mut v = v.map(|v| v.into_boxed_slice().into_vec());
        let p = v
            .as_mut()
            .map_or(std::ptr::null_mut(), |v| v.as_mut_ptr().cast());
        attrs.push(CK_ATTRIBUTE {
            type_,
            pValue: p,
            ulValueLen: len,
        });
        buffers.extend(v);
    }
    Template {
        attrs,
        _buffers: buffers,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.byte();
    let copy = flags & 1 != 0;
    let class = CLASSES[usize::from(flags >> 1) % CLASSES.len()];
    let mut daemon = HashMap::new();
    for _ in 0..input.byte() % 8 {
        let t = input.attribute_type() as u32;
        let n = usize::from(input.byte());
        daemon.insert(t, input.bytes(n));
    }
    let create = template(&mut input);
    let change = template(&mut input);
    // The answer template: types, and buffers of a chosen size (or NULL).
    let k = usize::from(input.byte() % 12);
    let mut types = Vec::with_capacity(k);
    let mut sizes = Vec::with_capacity(k);
    for _ in 0..k {
        types.push(input.attribute_type());
        let b = input.byte();
        sizes.push((b != 255).then(|| usize::from(b) * 4));
    }
    let mut buffers: Vec<Option<Vec<u8>>> = sizes
        .iter()
        .map(|s| s.map(|n| vec![0u8; n].into_boxed_slice().into_vec()))
        .collect();
    let mut get: Vec<CK_ATTRIBUTE> = types
        .iter()
        .zip(buffers.iter_mut())
        .map(|(&type_, b)| CK_ATTRIBUTE {
            type_,
            pValue: b
                .as_mut()
                .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr().cast()),
            ulValueLen: b.as_ref().map_or(0, |b| b.len() as CK_ULONG),
        })
        .collect();
    // SAFETY: every array and buffer above is valid for the lengths given,
    // except NULL values, which the module must refuse or treat as length
    // queries.
    let [created, _, got] = unsafe {
        decode_templates(
            create.attrs.as_ptr(),
            create.attrs.len() as CK_ULONG,
            change.attrs.as_ptr(),
            change.attrs.len() as CK_ULONG,
            copy,
            class,
            &daemon,
            get.as_mut_ptr(),
            get.len() as CK_ULONG,
        )
    };
    if create.attrs.is_empty() {
        assert_eq!(
            created, CKR_TEMPLATE_INCOMPLETE,
            "an empty template made an object"
        );
    }
    for (a, size) in get.iter().zip(&sizes) {
        if a.ulValueLen == CK_UNAVAILABLE_INFORMATION {
            continue;
        }
        if let Some(size) = size {
            assert!(
                a.ulValueLen as usize <= *size,
                "answered more than the buffer"
            );
        }
    }
    if got == CKR_OK || got == CKR_BUFFER_TOO_SMALL {
        // Every answered attribute fits its buffer or was a length query.
        for (a, size) in get.iter().zip(&sizes) {
            if size.is_none() {
                assert_ne!(a.ulValueLen, CK_UNAVAILABLE_INFORMATION);
            }
        }
    }
});
