//! The C boundary, and the only place with `unsafe` code: every `C_*`
//! entry point, the 2.40 and 3.0 function lists and the interface list.
//! Each entry checks and converts its pointers (NULL where a value is
//! needed is `CKR_ARGUMENTS_BAD`), calls the safe inner function in
//! `module.rs`, writes the result back following the standard's
//! length-query and `CKR_BUFFER_TOO_SMALL` rules, and turns the `Result`
//! into a `CK_RV` through [`Error::rv`]; a panic becomes
//! `CKR_GENERAL_ERROR` and never crosses into C. The `entries!` macro
//! writes that frame once, so each entry states only its pointers and the
//! call it makes.

#![allow(non_snake_case)]

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use cryptoki_sys::*;
use zeroize::Zeroizing;

use crate::error::{Error, Result, fail};
use crate::mechanisms::{self, Mechanism, Param, Takes};
use crate::module::{
    self, Cap, DecryptOp, DigestOp, EncryptOp, InitArgs, KeyUse, Out, SignOp, VerifyOp, pad,
};
use crate::objects::{AttrMap, Template, Value};

/// Runs an entry's body: its `Result` or its panic becomes the `CK_RV`.
fn entry(f: impl FnOnce() -> Result<()>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(e)) => e.rv(),
        Err(_) => CKR_GENERAL_ERROR,
    }
}

fn len_usize(len: CK_ULONG) -> Result<usize> {
    usize::try_from(len).or_else(|_| fail(CKR_ARGUMENTS_BAD))
}

/// The caller's input buffer.
///
/// # Safety
/// A non-NULL `p` must be valid for reads of `len` bytes for `'a`.
unsafe fn bytes<'a>(p: *const CK_BYTE, len: CK_ULONG) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return fail(CKR_ARGUMENTS_BAD);
    }
    let len = len_usize(len)?;
    // SAFETY: non-NULL, and valid for `len` bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A buffer inside a mechanism's parameter, copied: a NULL pointer with
/// a length is the parameter's fault (`CKR_MECHANISM_PARAM_INVALID`), not
/// the call's.
///
/// # Safety
/// As [`bytes`].
unsafe fn param_bytes(p: *const CK_BYTE, len: CK_ULONG) -> Result<Vec<u8>> {
    // SAFETY: the caller's contract.
    unsafe { bytes(p, len) }
        .map(<[u8]>::to_vec)
        .map_err(|_| Error::Rv(CKR_MECHANISM_PARAM_INVALID))
}

/// The caller's output buffer of `len` elements.
///
/// # Safety
/// A non-NULL `p` must be valid for writes of `len` elements for `'a`.
unsafe fn slice_mut<'a, T>(p: *mut T, len: CK_ULONG) -> Result<&'a mut [T]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return fail(CKR_ARGUMENTS_BAD);
    }
    let len = len_usize(len)?;
    // SAFETY: non-NULL, and valid for `len` elements by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// A caller's out-parameter.
///
/// # Safety
/// A non-NULL `p` must be valid for reads and writes of one `T` for `'a`.
unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T> {
    // SAFETY: `as_mut` checks for NULL; validity is the caller's contract.
    unsafe { p.as_mut() }.ok_or(Error::Rv(CKR_ARGUMENTS_BAD))
}

/// Writes `f`'s output the standard's way: a NULL buffer asks for the
/// length; a short one gets `CKR_BUFFER_TOO_SMALL` with the length needed
/// (the inner function keeps the operation active then).
///
/// # Safety
/// `len` must be NULL or valid for one `CK_ULONG`; a non-NULL `buf` must be
/// valid for writes of `*len` bytes.
unsafe fn write_out(
    buf: *mut CK_BYTE,
    len: *mut CK_ULONG,
    f: impl FnOnce(Cap) -> Result<Out>,
) -> Result<()> {
    // SAFETY: the caller's contract for `len`.
    let len = unsafe { out(len) }?;
    let cap = if buf.is_null() {
        None
    } else {
        Some(usize::try_from(*len).unwrap_or(usize::MAX))
    };
    match f(cap) {
        Ok(Out::Len(n)) => {
            *len = n as CK_ULONG;
            Ok(())
        }
        Ok(Out::Data(d)) => {
            if cap.is_none_or(|c| c < d.len()) {
                return fail(CKR_GENERAL_ERROR);
            }
            // SAFETY: `buf` is non-NULL (cap is Some) and valid for `*len`
            // bytes, which is at least `d.len()`.
            let dst = unsafe { slice_mut(buf, d.len() as CK_ULONG) }?;
            dst.copy_from_slice(&d);
            *len = d.len() as CK_ULONG;
            Ok(())
        }
        Err(Error::BufferTooSmall { needed }) => {
            *len = needed as CK_ULONG;
            Err(Error::BufferTooSmall { needed })
        }
        Err(e) => Err(e),
    }
}

/// Writes a list of `CK_ULONG`-sized values the same way.
///
/// # Safety
/// As [`write_out`], counting elements instead of bytes.
unsafe fn write_list<T: Copy>(buf: *mut T, count: *mut CK_ULONG, items: &[T]) -> Result<()> {
    // SAFETY: the caller's contract for `count`.
    let count = unsafe { out(count) }?;
    if buf.is_null() {
        *count = items.len() as CK_ULONG;
        return Ok(());
    }
    if (*count as usize) < items.len() {
        *count = items.len() as CK_ULONG;
        return fail(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: non-NULL and valid for `*count >= items.len()` elements.
    let dst = unsafe { slice_mut(buf, items.len() as CK_ULONG) }?;
    dst.copy_from_slice(items);
    *count = items.len() as CK_ULONG;
    Ok(())
}

/// A mechanism's parameter read as the C structure `T` it must be, of
/// exactly `T`'s size, else `CKR_MECHANISM_PARAM_INVALID`. `T` is one of
/// PKCS#11's parameter structs: integers and pointers, valid for any bits.
///
/// # Safety
/// `m`'s parameter, if not NULL, must be valid for `ulParameterLen` bytes.
unsafe fn param_struct<T: Copy>(m: &CK_MECHANISM) -> Result<T> {
    if m.pParameter.is_null() || len_usize(m.ulParameterLen)? != std::mem::size_of::<T>() {
        return fail(CKR_MECHANISM_PARAM_INVALID);
    }
    // SAFETY: non-NULL and exactly `T`'s size, valid for that by the
    // caller's contract; read unaligned since C callers need not align it.
    Ok(unsafe { std::ptr::read_unaligned(m.pParameter as *const T) })
}

/// The caller's mechanism; `None` for NULL. Its parameter is read as the
/// structure the mechanism takes (never guessed from its size): a PSS
/// mechanism needs a `CK_RSA_PKCS_PSS_PARAMS`, OAEP a
/// `CK_RSA_PKCS_OAEP_PARAMS` whose source is `CKZ_DATA_SPECIFIED`, each of
/// exactly its size, or `CKR_MECHANISM_PARAM_INVALID`. A parameter given
/// to a mechanism that takes none is kept as [`Param::Other`], which every
/// mechanism refuses.
///
/// # Safety
/// A non-NULL `p` must point to a valid `CK_MECHANISM` whose parameter, if
/// any, is valid for `ulParameterLen` bytes.
unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<Option<Mechanism>> {
    // SAFETY: `as_ref` checks for NULL; validity is the caller's contract.
    let Some(m) = (unsafe { p.as_ref() }) else {
        return Ok(None);
    };
    let len = len_usize(m.ulParameterLen)?;
    let given = !m.pParameter.is_null();
    if !given && len != 0 {
        return fail(CKR_MECHANISM_PARAM_INVALID);
    }
    let sized = |size: usize| {
        if given && len == size {
            Ok(())
        } else {
            fail(CKR_MECHANISM_PARAM_INVALID)
        }
    };
    let param = match mechanisms::takes(m.mechanism) {
        Takes::Nothing if given && len != 0 => Param::Other,
        Takes::Nothing => Param::None,
        Takes::Pss => {
            // SAFETY: the parameter is valid for its length (our contract).
            let p: CK_RSA_PKCS_PSS_PARAMS = unsafe { param_struct(m) }?;
            Param::Pss {
                hash: p.hashAlg,
                mgf: p.mgf,
                salt_len: p.sLen,
            }
        }
        Takes::Oaep => {
            // SAFETY: as above.
            let p: CK_RSA_PKCS_OAEP_PARAMS = unsafe { param_struct(m) }?;
            Param::Oaep {
                hash: p.hashAlg,
                mgf: p.mgf,
                // SAFETY: the label is the caller's buffer of
                // ulSourceDataLen bytes.
                label: oaep_label(p.source, unsafe {
                    bytes(p.pSourceData as *const u8, p.ulSourceDataLen)
                })?,
            }
        }
        Takes::Iv(n) => {
            sized(n)?;
            // SAFETY: non-NULL and `n` bytes long, checked just above.
            Param::Iv(unsafe { bytes(m.pParameter as *const u8, m.ulParameterLen) }?.to_vec())
        }
        Takes::Ecdh => {
            // SAFETY: as for PSS.
            let p: CK_ECDH1_DERIVE_PARAMS = unsafe { param_struct(m) }?;
            Param::Ecdh {
                kdf: p.kdf,
                // SAFETY: the caller's buffers of the lengths it gives.
                shared: unsafe { param_bytes(p.pSharedData, p.ulSharedDataLen) }?,
                // SAFETY: as above.
                public: unsafe { param_bytes(p.pPublicData, p.ulPublicDataLen) }?,
            }
        }
        Takes::Gcm => {
            // SAFETY: as for PSS.
            let p: CK_GCM_PARAMS = unsafe { param_struct(m) }?;
            Param::Gcm {
                // SAFETY: the caller's buffers of the lengths it gives.
                iv: unsafe { param_bytes(p.pIv, p.ulIvLen) }?,
                // SAFETY: as above.
                aad: unsafe { param_bytes(p.pAAD, p.ulAADLen) }?,
                tag_bits: p.ulTagBits,
            }
        }
    };
    Ok(Some(Mechanism {
        mechanism: m.mechanism,
        param,
    }))
}

/// An OAEP label: `CKZ_DATA_SPECIFIED` is the standard's only source. A
/// source of 0 with no label is taken as the empty label, because
/// OpenSC's pkcs11-tool up to 0.23 (Debian 12's) sends exactly that;
/// anything else is refused.
fn oaep_label(source: CK_ULONG, data: Result<&[u8]>) -> Result<Vec<u8>> {
    let data = data.or_else(|_| fail(CKR_MECHANISM_PARAM_INVALID))?;
    match source {
        CKZ_DATA_SPECIFIED => Ok(data.to_vec()),
        0 if data.is_empty() => Ok(Vec::new()),
        _ => fail(CKR_MECHANISM_PARAM_INVALID),
    }
}

/// The caller's template, copied.
///
/// # Safety
/// A non-NULL `p` must point to `n` valid `CK_ATTRIBUTE`s whose values are
/// valid for their lengths.
unsafe fn template(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Template> {
    // SAFETY: the caller's contract; only read.
    let attrs = unsafe { slice_mut(p as *mut CK_ATTRIBUTE, n) }?;
    attrs
        .iter()
        .map(|a| {
            // SAFETY: each value is valid for its length by the contract.
            let v = unsafe { bytes(a.pValue as *const u8, a.ulValueLen) }?;
            Ok((a.type_, v.to_vec()))
        })
        .collect()
}

// ---- general-purpose functions -------------------------------------------

extern "C" fn atfork_prepare() {
    let _ = catch_unwind(module::before_fork);
}

extern "C" fn atfork_release() {
    let _ = catch_unwind(module::after_fork);
}

/// # Safety
/// `pInitArgs` is NULL or points to a `CK_C_INITIALIZE_ARGS`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Initialize(pInitArgs: *mut c_void) -> CK_RV {
    entry(|| {
        let mut args = InitArgs::default();
        // SAFETY: NULL or a CK_C_INITIALIZE_ARGS, per the standard.
        if let Some(a) = unsafe { (pInitArgs as *const CK_C_INITIALIZE_ARGS).as_ref() } {
            if !a.pReserved.is_null() {
                return fail(CKR_ARGUMENTS_BAD);
            }
            let given = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if given.iter().any(|g| *g) && !given.iter().all(|g| *g) {
                return fail(CKR_ARGUMENTS_BAD);
            }
            // Supplied mutex functions are not needed: the module always
            // uses the operating system's locks.
            args.cant_create_threads = a.flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS != 0;
        }
        module::initialize(args, || {
            // SAFETY: the handlers are plain functions that never unwind.
            unsafe {
                libc::pthread_atfork(
                    Some(atfork_prepare),
                    Some(atfork_release),
                    Some(atfork_release),
                );
            }
        })
    })
}

/// # Safety
/// `pReserved` must be NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Finalize(pReserved: *mut c_void) -> CK_RV {
    entry(|| {
        if !pReserved.is_null() {
            return fail(CKR_ARGUMENTS_BAD);
        }
        module::finalize()
    })
}

/// # Safety
/// `ppFunctionList` is NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(ppFunctionList: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    entry(|| {
        // SAFETY: the caller's contract.
        let p = unsafe { out(ppFunctionList) }?;
        *p = &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST;
        Ok(())
    })
}

/// # Safety
/// `pInterfacesList` is NULL or valid for `*pulCount` interfaces;
/// `pulCount` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterfaceList(
    pInterfacesList: *mut CK_INTERFACE,
    pulCount: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: the caller's contract.
    entry(|| unsafe { write_list(pInterfacesList, pulCount, &INTERFACES.0) })
}

/// # Safety
/// `pInterfaceName` is NULL or a NUL-terminated string; `pVersion` NULL or
/// valid; `ppInterface` NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterface(
    pInterfaceName: *mut CK_UTF8CHAR,
    pVersion: *mut CK_VERSION,
    ppInterface: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    entry(|| {
        // SAFETY: the caller's contract.
        let pp = unsafe { out(ppInterface) }?;
        if !pInterfaceName.is_null() {
            // SAFETY: a NUL-terminated string by the caller's contract.
            let name = unsafe { std::ffi::CStr::from_ptr(pInterfaceName as *const _) };
            if name.to_bytes() != b"PKCS 11" {
                return fail(CKR_ARGUMENTS_BAD);
            }
        }
        // SAFETY: the caller's contract.
        let want = unsafe { (pVersion as *const CK_VERSION).as_ref() }.copied();
        let versions = [
            (&FUNCTION_LIST_3_0.version, 0usize),
            (&FUNCTION_LIST.version, 1usize),
        ];
        let found = versions.iter().find(|(v, _)| {
            want.is_none_or(|w| w.major == v.major && w.minor == v.minor)
                && flags & !INTERFACES.0[0].flags == 0
        });
        match found {
            Some((_, i)) => {
                *pp = &INTERFACES.0[*i] as *const CK_INTERFACE as *mut CK_INTERFACE;
                Ok(())
            }
            None => fail(CKR_ARGUMENTS_BAD),
        }
    })
}

// ---- the entry points that need the module ----------------------------------

/// Declares `C_*` entry points that work on the initialised module. Each
/// body runs inside [`entry`] (its `Result`, or a panic, becomes the
/// `CK_RV`) with `$m` bound to the module; `CKR_CRYPTOKI_NOT_INITIALIZED`
/// comes first. An `unsafe fn` entry's body may use the pointer helpers
/// above on its own arguments, whose validity its `# Safety` section states.
macro_rules! entries {
    () => {};
    (
        $(#[$doc:meta])*
        unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) |$m:ident| $body:expr;
        $($rest:tt)*
    ) => {
        $(#[$doc])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
            entry(|| {
                let $m = module::module()?;
                // SAFETY: the unsafe operations in the body are the pointer
                // helpers above, given this entry's own pointer arguments;
                // the C caller guarantees those as the `# Safety` section
                // says, which is each helper's contract. NULL is checked.
                unsafe { $body }
            })
        }
        entries!($($rest)*);
    };
    (
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) |$m:ident| $body:expr;
        $($rest:tt)*
    ) => {
        $(#[$doc])*
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($($arg: $ty),*) -> CK_RV {
            entry(|| {
                let $m = module::module()?;
                $body
            })
        }
        entries!($($rest)*);
    };
}

/// Writes what `f` answers to the caller's out-parameter, checked first.
///
/// # Safety
/// As [`out`].
unsafe fn put<T>(p: *mut T, f: impl FnOnce() -> Result<T>) -> Result<()> {
    // SAFETY: the caller's contract.
    let p = unsafe { out(p) }?;
    *p = f()?;
    Ok(())
}

/// A PIN, copied into memory that is wiped when dropped.
///
/// # Safety
/// As [`bytes`].
unsafe fn secret(p: *const CK_UTF8CHAR, len: CK_ULONG) -> Result<Zeroizing<Vec<u8>>> {
    // SAFETY: the caller's contract.
    Ok(Zeroizing::new(unsafe { bytes(p, len) }?.to_vec()))
}

/// A PIN that may be absent: NULL with length 0 is no PIN at all (the
/// protected authentication path, or the PIN asked on the phone).
///
/// # Safety
/// As [`bytes`].
unsafe fn optional_secret(
    p: *const CK_UTF8CHAR,
    len: CK_ULONG,
) -> Result<Option<Zeroizing<Vec<u8>>>> {
    if p.is_null() && len == 0 {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    unsafe { secret(p, len) }.map(Some)
}

/// Answers a `C_GetAttributeValue` template from an object's attributes.
/// Every attribute is answered; the first failure other than a short
/// buffer wins, as the standard lets any of them be returned.
///
/// # Safety
/// Each attribute's `pValue` must be NULL or valid for writes of its
/// `ulValueLen` bytes.
unsafe fn fill_template(tmpl: &mut [CK_ATTRIBUTE], attrs: &AttrMap) -> Result<()> {
    let mut result: Result<()> = Ok(());
    let mut short = false;
    for a in tmpl.iter_mut() {
        let refused = match attrs.get(&a.type_) {
            None => Some(CKR_ATTRIBUTE_TYPE_INVALID),
            Some(Value::Sensitive) => Some(CKR_ATTRIBUTE_SENSITIVE),
            Some(Value::Bytes(v)) => {
                if a.pValue.is_null() {
                    a.ulValueLen = v.len() as CK_ULONG;
                } else if (a.ulValueLen as usize) < v.len() {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    short = true;
                } else {
                    // SAFETY: non-NULL and valid for ulValueLen >= v.len()
                    // bytes by the caller's contract.
                    let dst = unsafe { slice_mut(a.pValue as *mut u8, v.len() as CK_ULONG) }?;
                    dst.copy_from_slice(v);
                    a.ulValueLen = v.len() as CK_ULONG;
                }
                None
            }
        };
        if let Some(rv) = refused {
            a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
            if result.is_ok() {
                result = fail(rv);
            }
        }
    }
    if short && result.is_ok() {
        return fail(CKR_BUFFER_TOO_SMALL);
    }
    result
}

/// Template decoding without a module, a session or a daemon, for the
/// `pkcs11_template` fuzz target, which builds the arrays from its input.
/// `create` is read from its `CK_ATTRIBUTE` array and checked as
/// `C_CreateObject` checks a session object's template; if it fails, the
/// object is built instead from `daemon`, the daemon's attributes of a
/// handset object of class `daemon_class`. `change` is then read, matched
/// against the object as `C_FindObjects` matches a search template, and
/// applied over it as `C_CopyObject` (`copy`) or `C_SetAttributeValue`
/// would. Last the object is answered into `get` as `C_GetAttributeValue`
/// answers. Returns the three steps' `CK_RV`s.
///
/// # Safety
/// `create` and `change` as `C_CreateObject`'s template (NULL with count
/// 0, or valid for `n` and `m` attributes whose values are valid for their
/// lengths); `get` as `C_GetAttributeValue`'s (each value NULL or valid
/// for writes of its length).
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn decode_templates(
    create: *const CK_ATTRIBUTE,
    n: CK_ULONG,
    change: *const CK_ATTRIBUTE,
    m: CK_ULONG,
    copy: bool,
    daemon_class: CK_OBJECT_CLASS,
    daemon: &std::collections::HashMap<u32, Vec<u8>>,
    get: *mut CK_ATTRIBUTE,
    k: CK_ULONG,
) -> [CK_RV; 3] {
    use crate::objects;
    fn rv<T>(r: &Result<T>) -> CK_RV {
        r.as_ref().map_or_else(Error::rv, |_| CKR_OK)
    }
    // SAFETY: the caller's contract.
    let made = unsafe { template(create, n) }.and_then(|t| {
        let t = objects::Wiped(t);
        objects::check_shape(&t)?;
        objects::is_token(&t)?;
        objects::is_private(&t)?;
        objects::from_template(&t)
    });
    let created = rv(&made);
    let attrs = made.unwrap_or_else(|_| objects::build(daemon_class, daemon));
    // SAFETY: the caller's contract.
    let new = unsafe { template(change, m) }.and_then(|t| {
        let t = objects::Wiped(t);
        objects::quick_suffices(&t);
        objects::matches(&objects::readable(&attrs), &t);
        objects::changed(&attrs, &t, copy)
    });
    let changed = rv(&new);
    let shown = objects::readable(new.as_ref().unwrap_or(&attrs));
    // SAFETY: the caller's contract.
    let got = unsafe { slice_mut(get, k) }.and_then(|tmpl| unsafe { fill_template(tmpl, &shown) });
    [created, changed, rv(&got)]
}

entries! {
    // ---- general and slots ----------------------------------------------

    /// # Safety
    /// `pInfo` is NULL or valid for writing a `CK_INFO`.
    unsafe fn C_GetInfo(pInfo: *mut CK_INFO) |_m| put(pInfo, || Ok(CK_INFO {
        cryptokiVersion: CK_VERSION { major: 3, minor: 0 },
        manufacturerID: pad("phonecsp"),
        flags: 0,
        libraryDescription: pad("phonecsp: a phone as smart card"),
        libraryVersion: CK_VERSION { major: 0, minor: 1 },
    }));

    /// # Safety
    /// `pSlotList` NULL or valid for `*pulCount` IDs; `pulCount` NULL or valid.
    unsafe fn C_GetSlotList(
        tokenPresent: CK_BBOOL,
        pSlotList: *mut CK_SLOT_ID,
        pulCount: *mut CK_ULONG,
    ) |m| {
        if pulCount.is_null() {
            return fail(CKR_ARGUMENTS_BAD);
        }
        // The list is read afresh on the length query, so that the second
        // call fills in what the first counted.
        let list = m.slot_list(tokenPresent != CK_FALSE, pSlotList.is_null());
        write_list(pSlotList, pulCount, &list)
    };

    /// # Safety
    /// `pInfo` NULL or valid for writing.
    unsafe fn C_GetSlotInfo(slotID: CK_SLOT_ID, pInfo: *mut CK_SLOT_INFO) |m|
        put(pInfo, || m.slot_info(slotID));

    /// # Safety
    /// `pInfo` NULL or valid for writing.
    unsafe fn C_GetTokenInfo(slotID: CK_SLOT_ID, pInfo: *mut CK_TOKEN_INFO) |m|
        put(pInfo, || m.token_info(slotID));

    /// # Safety
    /// `pSlot` NULL or valid for writing.
    unsafe fn C_WaitForSlotEvent(
        flags: CK_FLAGS,
        pSlot: *mut CK_SLOT_ID,
        _pReserved: *mut c_void,
    ) |m|
        put(pSlot, || m.wait_for_slot_event(flags));

    /// # Safety
    /// `pMechanismList` NULL or valid for `*pulCount`; `pulCount` NULL or valid.
    unsafe fn C_GetMechanismList(
        slotID: CK_SLOT_ID,
        pMechanismList: *mut CK_MECHANISM_TYPE,
        pulCount: *mut CK_ULONG,
    ) |m| write_list(pMechanismList, pulCount, &m.mechanism_list(slotID)?);

    /// # Safety
    /// `pInfo` NULL or valid for writing.
    unsafe fn C_GetMechanismInfo(
        slotID: CK_SLOT_ID,
        type_: CK_MECHANISM_TYPE,
        pInfo: *mut CK_MECHANISM_INFO,
    ) |m| put(pInfo, || m.mechanism_info(slotID, type_));

    /// # Safety
    /// `pOldPin`/`pNewPin` valid for their lengths.
    unsafe fn C_SetPIN(
        hSession: CK_SESSION_HANDLE,
        pOldPin: *mut CK_UTF8CHAR,
        ulOldLen: CK_ULONG,
        pNewPin: *mut CK_UTF8CHAR,
        ulNewLen: CK_ULONG,
    ) |m| m.set_pin(hSession, &secret(pOldPin, ulOldLen)?, &secret(pNewPin, ulNewLen)?);

    /// # Safety
    /// `pPin` valid for `ulPinLen`, or NULL with 0.
    unsafe fn C_InitPIN(
        hSession: CK_SESSION_HANDLE,
        pPin: *mut CK_UTF8CHAR,
        ulPinLen: CK_ULONG,
    ) |m| m.init_pin(hSession, optional_secret(pPin, ulPinLen)?);

    // ---- sessions ---------------------------------------------------------

    /// # Safety
    /// `phSession` NULL or valid for writing.
    unsafe fn C_OpenSession(
        slotID: CK_SLOT_ID,
        flags: CK_FLAGS,
        _pApplication: *mut c_void,
        _Notify: CK_NOTIFY,
        phSession: *mut CK_SESSION_HANDLE,
    ) |m| put(phSession, || m.open_session(slotID, flags));

    fn C_CloseSession(hSession: CK_SESSION_HANDLE) |m| m.close_session(hSession);

    fn C_CloseAllSessions(slotID: CK_SLOT_ID) |m| m.close_all_sessions(slotID);

    /// # Safety
    /// `pInfo` NULL or valid for writing.
    unsafe fn C_GetSessionInfo(hSession: CK_SESSION_HANDLE, pInfo: *mut CK_SESSION_INFO) |m|
        put(pInfo, || m.session_info(hSession));

    /// # Safety
    /// `pPin` NULL (with length 0) or valid for `ulPinLen` bytes.
    unsafe fn C_Login(
        hSession: CK_SESSION_HANDLE,
        userType: CK_USER_TYPE,
        pPin: *mut CK_UTF8CHAR,
        ulPinLen: CK_ULONG,
    ) |m| m.login(hSession, userType, optional_secret(pPin, ulPinLen)?);

    fn C_Logout(hSession: CK_SESSION_HANDLE) |m| m.logout(hSession);

    fn C_SessionCancel(hSession: CK_SESSION_HANDLE, flags: CK_FLAGS) |m| m.cancel(hSession, flags);

    // ---- objects ----------------------------------------------------------

    /// # Safety
    /// `pTemplate` valid for `ulCount` attributes; `phObject` NULL or valid.
    unsafe fn C_CreateObject(
        hSession: CK_SESSION_HANDLE,
        pTemplate: *mut CK_ATTRIBUTE,
        ulCount: CK_ULONG,
        phObject: *mut CK_OBJECT_HANDLE,
    ) |m| {
        let t = template(pTemplate, ulCount)?;
        put(phObject, || m.create_object(hSession, t))
    };

    fn C_DestroyObject(hSession: CK_SESSION_HANDLE, hObject: CK_OBJECT_HANDLE) |m|
        m.destroy_object(hSession, hObject);

    /// # Safety
    /// `pulSize` NULL or valid for writing.
    unsafe fn C_GetObjectSize(
        hSession: CK_SESSION_HANDLE,
        hObject: CK_OBJECT_HANDLE,
        pulSize: *mut CK_ULONG,
    ) |m| put(pulSize, || m.object_size(hSession, hObject));

    /// # Safety
    /// `pTemplate` NULL or valid for `ulCount` attributes, each value buffer
    /// NULL or valid for its length.
    unsafe fn C_GetAttributeValue(
        hSession: CK_SESSION_HANDLE,
        hObject: CK_OBJECT_HANDLE,
        pTemplate: *mut CK_ATTRIBUTE,
        ulCount: CK_ULONG,
    ) |m| {
        let tmpl = slice_mut(pTemplate, ulCount)?;
        let attrs = m.get_attributes(hSession, hObject)?;
        fill_template(tmpl, &attrs)
    };

    /// # Safety
    /// `pTemplate` valid for `ulCount` attributes.
    unsafe fn C_SetAttributeValue(
        hSession: CK_SESSION_HANDLE,
        hObject: CK_OBJECT_HANDLE,
        pTemplate: *mut CK_ATTRIBUTE,
        ulCount: CK_ULONG,
    ) |m| m.set_attributes(hSession, hObject, template(pTemplate, ulCount)?);

    /// # Safety
    /// `pTemplate` valid for `ulCount` attributes; `phNewObject` NULL or
    /// valid.
    unsafe fn C_CopyObject(
        hSession: CK_SESSION_HANDLE,
        hObject: CK_OBJECT_HANDLE,
        pTemplate: *mut CK_ATTRIBUTE,
        ulCount: CK_ULONG,
        phNewObject: *mut CK_OBJECT_HANDLE,
    ) |m| {
        let t = template(pTemplate, ulCount)?;
        put(phNewObject, || m.copy_object(hSession, hObject, t))
    };

    /// # Safety
    /// `pTemplate` NULL (with count 0) or valid for `ulCount` attributes.
    unsafe fn C_FindObjectsInit(
        hSession: CK_SESSION_HANDLE,
        pTemplate: *mut CK_ATTRIBUTE,
        ulCount: CK_ULONG,
    ) |m| m.find_init(hSession, template(pTemplate, ulCount)?);

    /// # Safety
    /// `phObject` valid for `ulMaxObjectCount` handles; `pulObjectCount` valid.
    unsafe fn C_FindObjects(
        hSession: CK_SESSION_HANDLE,
        phObject: *mut CK_OBJECT_HANDLE,
        ulMaxObjectCount: CK_ULONG,
        pulObjectCount: *mut CK_ULONG,
    ) |m| {
        let count = out(pulObjectCount)?;
        if phObject.is_null() {
            return fail(CKR_ARGUMENTS_BAD);
        }
        let dst = slice_mut(phObject, ulMaxObjectCount)?;
        let found = m.find(hSession, dst.len())?;
        dst[..found.len()].copy_from_slice(&found);
        *count = found.len() as CK_ULONG;
        Ok(())
    };

    fn C_FindObjectsFinal(hSession: CK_SESSION_HANDLE) |m| m.find_final(hSession);

    // ---- digests, signing and verifying (the rest is below, by kind) --------

    /// # Safety
    /// `pMechanism` NULL or a valid mechanism.
    unsafe fn C_DigestInit(hSession: CK_SESSION_HANDLE, pMechanism: *mut CK_MECHANISM) |m|
        m.digest_init(hSession, mechanism(pMechanism)?.as_ref());

    fn C_DigestKey(hSession: CK_SESSION_HANDLE, _hKey: CK_OBJECT_HANDLE) |m| m.digest_key(hSession);

    /// # Safety
    /// Buffers valid for their lengths.
    unsafe fn C_Verify(
        hSession: CK_SESSION_HANDLE,
        pData: *mut CK_BYTE,
        ulDataLen: CK_ULONG,
        pSignature: *mut CK_BYTE,
        ulSignatureLen: CK_ULONG,
    ) |m| m.step::<VerifyOp, _>(hSession, |s| {
        let data = bytes(pData, ulDataLen)?;
        m.verify(s, Some(data), bytes(pSignature, ulSignatureLen)?)
    });

    // ---- key management and random numbers --------------------------------------

    /// # Safety
    /// `pMechanism` a valid mechanism; templates valid for their counts;
    /// handle pointers NULL or valid.
    unsafe fn C_GenerateKeyPair(
        hSession: CK_SESSION_HANDLE,
        pMechanism: *mut CK_MECHANISM,
        pPublicKeyTemplate: *mut CK_ATTRIBUTE,
        ulPublicKeyAttributeCount: CK_ULONG,
        pPrivateKeyTemplate: *mut CK_ATTRIBUTE,
        ulPrivateKeyAttributeCount: CK_ULONG,
        phPublicKey: *mut CK_OBJECT_HANDLE,
        phPrivateKey: *mut CK_OBJECT_HANDLE,
    ) |m| {
        let mech = mechanism(pMechanism)?.ok_or(Error::Rv(CKR_ARGUMENTS_BAD))?;
        let public = template(pPublicKeyTemplate, ulPublicKeyAttributeCount)?;
        let private = template(pPrivateKeyTemplate, ulPrivateKeyAttributeCount)?;
        let ph_public = out(phPublicKey)?;
        let ph_private = out(phPrivateKey)?;
        (*ph_public, *ph_private) = m.generate_key_pair(hSession, &mech, public, private)?;
        Ok(())
    };

    /// # Safety
    /// `pMechanism` a valid mechanism; `pTemplate` valid for `ulCount`
    /// attributes; `phKey` NULL or valid.
    unsafe fn C_GenerateKey(
        hSession: CK_SESSION_HANDLE,
        pMechanism: *mut CK_MECHANISM,
        pTemplate: *mut CK_ATTRIBUTE,
        ulCount: CK_ULONG,
        phKey: *mut CK_OBJECT_HANDLE,
    ) |m| {
        let mech = mechanism(pMechanism)?.ok_or(Error::Rv(CKR_ARGUMENTS_BAD))?;
        let t = template(pTemplate, ulCount)?;
        put(phKey, || m.generate_key(hSession, &mech, t))
    };

    /// # Safety
    /// `pMechanism` a valid mechanism; `pWrappedKey` NULL or valid for
    /// `*pulWrappedKeyLen` bytes; `pulWrappedKeyLen` valid.
    unsafe fn C_WrapKey(
        hSession: CK_SESSION_HANDLE,
        pMechanism: *mut CK_MECHANISM,
        hWrappingKey: CK_OBJECT_HANDLE,
        hKey: CK_OBJECT_HANDLE,
        pWrappedKey: *mut CK_BYTE,
        pulWrappedKeyLen: *mut CK_ULONG,
    ) |m| {
        let mech = mechanism(pMechanism)?.ok_or(Error::Rv(CKR_ARGUMENTS_BAD))?;
        write_out(pWrappedKey, pulWrappedKeyLen, |cap| {
            m.wrap_key(hSession, &mech, hWrappingKey, hKey, cap)
        })
    };

    /// # Safety
    /// `pMechanism` a valid mechanism; `pWrappedKey` valid for
    /// `ulWrappedKeyLen` bytes; `pTemplate` valid for `ulAttributeCount`
    /// attributes; `phKey` NULL or valid.
    unsafe fn C_UnwrapKey(
        hSession: CK_SESSION_HANDLE,
        pMechanism: *mut CK_MECHANISM,
        hUnwrappingKey: CK_OBJECT_HANDLE,
        pWrappedKey: *mut CK_BYTE,
        ulWrappedKeyLen: CK_ULONG,
        pTemplate: *mut CK_ATTRIBUTE,
        ulAttributeCount: CK_ULONG,
        phKey: *mut CK_OBJECT_HANDLE,
    ) |m| {
        let mech = mechanism(pMechanism)?.ok_or(Error::Rv(CKR_ARGUMENTS_BAD))?;
        let wrapped = bytes(pWrappedKey, ulWrappedKeyLen)?;
        let t = template(pTemplate, ulAttributeCount)?;
        put(phKey, || m.unwrap_key(hSession, &mech, hUnwrappingKey, wrapped, t))
    };

    /// # Safety
    /// `pMechanism` a valid mechanism; `pTemplate` valid for
    /// `ulAttributeCount` attributes; `phKey` writable.
    unsafe fn C_DeriveKey(
        hSession: CK_SESSION_HANDLE,
        pMechanism: *mut CK_MECHANISM,
        hBaseKey: CK_OBJECT_HANDLE,
        pTemplate: *mut CK_ATTRIBUTE,
        ulAttributeCount: CK_ULONG,
        phKey: *mut CK_OBJECT_HANDLE,
    ) |m| {
        let mech = mechanism(pMechanism)?.ok_or(Error::Rv(CKR_ARGUMENTS_BAD))?;
        let t = template(pTemplate, ulAttributeCount)?;
        put(phKey, || m.derive_key(hSession, &mech, hBaseKey, t))
    };

    /// # Safety
    /// `RandomData` valid for `ulRandomLen` bytes.
    unsafe fn C_GenerateRandom(
        hSession: CK_SESSION_HANDLE,
        RandomData: *mut CK_BYTE,
        ulRandomLen: CK_ULONG,
    ) |m| {
        let dst = slice_mut(RandomData, ulRandomLen)?;
        if dst.is_empty() {
            return m.check_session(hSession);
        }
        dst.copy_from_slice(&m.generate_random(hSession, dst.len())?);
        Ok(())
    };

    fn C_SeedRandom(hSession: CK_SESSION_HANDLE, _pSeed: *mut CK_BYTE, _ulSeedLen: CK_ULONG) |m| {
        m.check_session(hSession)?;
        fail(CKR_RANDOM_SEED_NOT_SUPPORTED)
    };
}

// ---- the operations' entries, by kind ----------------------------------------
// Several operations share one C signature per step (init with a key, one
// single-part call, update, final); each such signature is written once.

/// `C_*Init` of an operation on a key.
macro_rules! key_inits {
    ($($name:ident => $use:expr;)*) => {
        entries! {$(
            /// # Safety
            /// `pMechanism` NULL or a valid mechanism.
            unsafe fn $name(
                hSession: CK_SESSION_HANDLE,
                pMechanism: *mut CK_MECHANISM,
                hKey: CK_OBJECT_HANDLE,
            ) |m| m.key_init(hSession, $use, mechanism(pMechanism)?.as_ref(), hKey);
        )*}
    };
}

/// A single-part call: bytes in, bytes out the standard's way
/// ([`write_out`]). It runs as one step of its operation (`$kind`), so
/// that a bad argument ends the operation as any other failure does.
macro_rules! single_parts {
    ($($name:ident: $kind:ident => |$m:ident, $s:ident, $data:ident, $cap:ident| $call:expr;)*) => {
        entries! {$(
            /// # Safety
            /// `pData` valid for `ulDataLen` bytes; `pOut` NULL or valid for
            /// `*pulOutLen` bytes; `pulOutLen` valid.
            unsafe fn $name(
                hSession: CK_SESSION_HANDLE,
                pData: *mut CK_BYTE,
                ulDataLen: CK_ULONG,
                pOut: *mut CK_BYTE,
                pulOutLen: *mut CK_ULONG,
            ) |$m| $m.step::<$kind, _>(hSession, |$s| {
                let $data = bytes(pData, ulDataLen)?;
                write_out(pOut, pulOutLen, |$cap| $call)
            });
        )*}
    };
}

/// A step with one buffer of the caller's: an update's input, or a final
/// call's input or output; like a single-part call, one step of its
/// operation (`$kind`).
macro_rules! steps {
    ($($name:ident: $kind:ident ($buf:ident: $bt:ty, $len:ident: $lt:ty) |$m:ident, $s:ident| $call:expr;)*) => {
        entries! {$(
            /// # Safety
            /// An input buffer valid for its length; an output buffer NULL
            /// or valid for `*pulOutLen` bytes, and `pulOutLen` valid.
            unsafe fn $name(hSession: CK_SESSION_HANDLE, $buf: $bt, $len: $lt) |$m|
                $m.step::<$kind, _>(hSession, |$s| $call);
        )*}
    };
}

key_inits! {
    C_EncryptInit => KeyUse::Encrypt;
    C_DecryptInit => KeyUse::Decrypt;
    C_SignInit => KeyUse::Sign;
    C_VerifyInit => KeyUse::Verify;
}

single_parts! {
    C_Encrypt: EncryptOp => |m, s, data, cap| m.encrypt(s, data, cap);
    C_EncryptUpdate: EncryptOp => |m, s, data, cap| m.encrypt_update(s, data, cap);
    C_Decrypt: DecryptOp => |m, s, data, cap| m.decrypt(s, data, cap);
    C_DecryptUpdate: DecryptOp => |m, s, data, cap| m.decrypt_update(s, data, cap);
    C_Digest: DigestOp => |m, s, data, cap| m.digest(s, Some(data), cap);
    C_Sign: SignOp => |m, s, data, cap| m.sign(s, Some(data), cap);
}

steps! {
    C_DigestUpdate: DigestOp(pPart: B, ulPartLen: L) |m, s|
        m.digest_update(s, bytes(pPart, ulPartLen)?);
    C_SignUpdate: SignOp(pPart: B, ulPartLen: L) |m, s|
        m.sign_update(s, bytes(pPart, ulPartLen)?);
    C_VerifyUpdate: VerifyOp(pPart: B, ulPartLen: L) |m, s|
        m.verify_update(s, bytes(pPart, ulPartLen)?);
    C_DigestFinal: DigestOp(pOut: B, pulOutLen: LP) |m, s|
        write_out(pOut, pulOutLen, |c| m.digest(s, None, c));
    C_SignFinal: SignOp(pOut: B, pulOutLen: LP) |m, s|
        write_out(pOut, pulOutLen, |c| m.sign(s, None, c));
    C_EncryptFinal: EncryptOp(pOut: B, pulOutLen: LP) |m, s|
        write_out(pOut, pulOutLen, |c| m.encrypt_final(s, c));
    C_DecryptFinal: DecryptOp(pOut: B, pulOutLen: LP) |m, s|
        write_out(pOut, pulOutLen, |c| m.decrypt_final(s, c));
    C_VerifyFinal: VerifyOp(pSig: B, ulSigLen: L) |m, s|
        m.verify(s, None, bytes(pSig, ulSigLen)?);
}

/// Functions run one at a time per session: there is nothing to ask about
/// or cancel in parallel.
#[unsafe(no_mangle)]
pub extern "C" fn C_GetFunctionStatus(_hSession: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_PARALLEL
}

#[unsafe(no_mangle)]
pub extern "C" fn C_CancelFunction(_hSession: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_PARALLEL
}

// ---- what the handset does not do ------------------------------------------------------------

/// Entry points that answer `CKR_FUNCTION_NOT_SUPPORTED`: token and PIN
/// initialisation (done on the phone), saved operation state, recovery
/// signatures, dual-function updates, key derivation, and the 3.0
/// message-based functions.
macro_rules! not_supported {
    ($($name:ident($($arg:ty),*);)*) => {$(
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($(_: $arg),*) -> CK_RV {
            CKR_FUNCTION_NOT_SUPPORTED
        }
    )*};
}

type H = CK_SESSION_HANDLE;
type B = *mut CK_BYTE;
type L = CK_ULONG;
type LP = *mut CK_ULONG;
type M = *mut CK_MECHANISM;
type O = CK_OBJECT_HANDLE;
type V = *mut c_void;
type U = *mut CK_UTF8CHAR;

not_supported! {
    C_InitToken(CK_SLOT_ID, U, L, U);
    C_GetOperationState(H, B, LP);
    C_SetOperationState(H, B, L, O, O);
    C_SignRecoverInit(H, M, O);
    C_SignRecover(H, B, L, B, LP);
    C_VerifyRecoverInit(H, M, O);
    C_VerifyRecover(H, B, L, B, LP);
    C_DigestEncryptUpdate(H, B, L, B, LP);
    C_DecryptDigestUpdate(H, B, L, B, LP);
    C_SignEncryptUpdate(H, B, L, B, LP);
    C_DecryptVerifyUpdate(H, B, L, B, LP);
    C_LoginUser(H, CK_USER_TYPE, U, L, U, L);
    C_MessageEncryptInit(H, M, O);
    C_EncryptMessage(H, V, L, B, L, B, L, B, LP);
    C_EncryptMessageBegin(H, V, L, B, L);
    C_EncryptMessageNext(H, V, L, B, L, B, LP, CK_FLAGS);
    C_MessageEncryptFinal(H);
    C_MessageDecryptInit(H, M, O);
    C_DecryptMessage(H, V, L, B, L, B, L, B, LP);
    C_DecryptMessageBegin(H, V, L, B, L);
    C_DecryptMessageNext(H, V, L, B, L, B, LP, CK_FLAGS);
    C_MessageDecryptFinal(H);
    C_MessageSignInit(H, M, O);
    C_SignMessage(H, V, L, B, L, B, LP);
    C_SignMessageBegin(H, V, L);
    C_SignMessageNext(H, V, L, B, L, B, LP);
    C_MessageSignFinal(H);
    C_MessageVerifyInit(H, M, O);
    C_VerifyMessage(H, V, L, B, L, B, L);
    C_VerifyMessageBegin(H, V, L);
    C_VerifyMessageNext(H, V, L, B, L, B, L);
    C_MessageVerifyFinal(H);
}

// ---- the function lists -------------------------------------------------------------------------

macro_rules! function_list {
    ($ty:ident { $($extra:ident),* }) => {
        $ty {
            version: CK_VERSION { major: 0, minor: 0 },
            C_Initialize: Some(C_Initialize),
            C_Finalize: Some(C_Finalize),
            C_GetInfo: Some(C_GetInfo),
            C_GetFunctionList: Some(C_GetFunctionList),
            C_GetSlotList: Some(C_GetSlotList),
            C_GetSlotInfo: Some(C_GetSlotInfo),
            C_GetTokenInfo: Some(C_GetTokenInfo),
            C_GetMechanismList: Some(C_GetMechanismList),
            C_GetMechanismInfo: Some(C_GetMechanismInfo),
            C_InitToken: Some(C_InitToken),
            C_InitPIN: Some(C_InitPIN),
            C_SetPIN: Some(C_SetPIN),
            C_OpenSession: Some(C_OpenSession),
            C_CloseSession: Some(C_CloseSession),
            C_CloseAllSessions: Some(C_CloseAllSessions),
            C_GetSessionInfo: Some(C_GetSessionInfo),
            C_GetOperationState: Some(C_GetOperationState),
            C_SetOperationState: Some(C_SetOperationState),
            C_Login: Some(C_Login),
            C_Logout: Some(C_Logout),
            C_CreateObject: Some(C_CreateObject),
            C_CopyObject: Some(C_CopyObject),
            C_DestroyObject: Some(C_DestroyObject),
            C_GetObjectSize: Some(C_GetObjectSize),
            C_GetAttributeValue: Some(C_GetAttributeValue),
            C_SetAttributeValue: Some(C_SetAttributeValue),
            C_FindObjectsInit: Some(C_FindObjectsInit),
            C_FindObjects: Some(C_FindObjects),
            C_FindObjectsFinal: Some(C_FindObjectsFinal),
            C_EncryptInit: Some(C_EncryptInit),
            C_Encrypt: Some(C_Encrypt),
            C_EncryptUpdate: Some(C_EncryptUpdate),
            C_EncryptFinal: Some(C_EncryptFinal),
            C_DecryptInit: Some(C_DecryptInit),
            C_Decrypt: Some(C_Decrypt),
            C_DecryptUpdate: Some(C_DecryptUpdate),
            C_DecryptFinal: Some(C_DecryptFinal),
            C_DigestInit: Some(C_DigestInit),
            C_Digest: Some(C_Digest),
            C_DigestUpdate: Some(C_DigestUpdate),
            C_DigestKey: Some(C_DigestKey),
            C_DigestFinal: Some(C_DigestFinal),
            C_SignInit: Some(C_SignInit),
            C_Sign: Some(C_Sign),
            C_SignUpdate: Some(C_SignUpdate),
            C_SignFinal: Some(C_SignFinal),
            C_SignRecoverInit: Some(C_SignRecoverInit),
            C_SignRecover: Some(C_SignRecover),
            C_VerifyInit: Some(C_VerifyInit),
            C_Verify: Some(C_Verify),
            C_VerifyUpdate: Some(C_VerifyUpdate),
            C_VerifyFinal: Some(C_VerifyFinal),
            C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
            C_VerifyRecover: Some(C_VerifyRecover),
            C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
            C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
            C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
            C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
            C_GenerateKey: Some(C_GenerateKey),
            C_GenerateKeyPair: Some(C_GenerateKeyPair),
            C_WrapKey: Some(C_WrapKey),
            C_UnwrapKey: Some(C_UnwrapKey),
            C_DeriveKey: Some(C_DeriveKey),
            C_SeedRandom: Some(C_SeedRandom),
            C_GenerateRandom: Some(C_GenerateRandom),
            C_GetFunctionStatus: Some(C_GetFunctionStatus),
            C_CancelFunction: Some(C_CancelFunction),
            C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
            $($extra: Some($extra),)*
        }
    };
}

static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: CK_VERSION {
        major: 2,
        minor: 40,
    },
    ..function_list!(CK_FUNCTION_LIST {})
};

static FUNCTION_LIST_3_0: CK_FUNCTION_LIST_3_0 = CK_FUNCTION_LIST_3_0 {
    version: CK_VERSION { major: 3, minor: 0 },
    ..function_list!(CK_FUNCTION_LIST_3_0 {
        C_GetInterfaceList,
        C_GetInterface,
        C_LoginUser,
        C_SessionCancel,
        C_MessageEncryptInit,
        C_EncryptMessage,
        C_EncryptMessageBegin,
        C_EncryptMessageNext,
        C_MessageEncryptFinal,
        C_MessageDecryptInit,
        C_DecryptMessage,
        C_DecryptMessageBegin,
        C_DecryptMessageNext,
        C_MessageDecryptFinal,
        C_MessageSignInit,
        C_SignMessage,
        C_SignMessageBegin,
        C_SignMessageNext,
        C_MessageSignFinal,
        C_MessageVerifyInit,
        C_VerifyMessage,
        C_VerifyMessageBegin,
        C_VerifyMessageNext,
        C_MessageVerifyFinal
    })
};

static INTERFACE_NAME: &[u8] = b"PKCS 11\0";

/// The interfaces `C_GetInterfaceList` offers: 3.0 first, then 2.40.
struct Interfaces([CK_INTERFACE; 2]);

// SAFETY: the pointers inside point to immutable statics (the name and the
// function lists), which no one writes, so sharing them between threads is
// sound.
unsafe impl Sync for Interfaces {}

static INTERFACES: Interfaces = Interfaces([
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
        pFunctionList: &FUNCTION_LIST_3_0 as *const CK_FUNCTION_LIST_3_0 as *mut c_void,
        flags: 0,
    },
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
        pFunctionList: &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut c_void,
        flags: 0,
    },
]);

#[cfg(test)]
mod conformance;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_pointers_are_arguments_bad() {
        // SAFETY: NULL is what is being tested; nothing is dereferenced.
        unsafe {
            assert_eq!(C_GetFunctionList(std::ptr::null_mut()), CKR_ARGUMENTS_BAD);
            assert_eq!(
                C_GetInterfaceList(std::ptr::null_mut(), std::ptr::null_mut()),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(
                C_GetInterface(
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0
                ),
                CKR_ARGUMENTS_BAD
            );
        }
    }

    #[test]
    fn function_lists_and_interfaces() {
        let _g = module::GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { C_GetFunctionList(&mut list) }, CKR_OK);
        // SAFETY: C_GetFunctionList returned a pointer to a static.
        let l = unsafe { &*list };
        assert_eq!((l.version.major, l.version.minor), (2, 40));
        assert!(l.C_WaitForSlotEvent.is_some());

        let mut n: CK_ULONG = 0;
        // SAFETY: a length query with a valid count pointer.
        assert_eq!(
            unsafe { C_GetInterfaceList(std::ptr::null_mut(), &mut n) },
            CKR_OK
        );
        assert_eq!(n, 2);
        let mut one = [CK_INTERFACE::default(); 1];
        // SAFETY: a buffer of `n` = 1 interfaces.
        n = 1;
        assert_eq!(
            unsafe { C_GetInterfaceList(one.as_mut_ptr(), &mut n) },
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(n, 2);

        let mut iface: *mut CK_INTERFACE = std::ptr::null_mut();
        let mut v = CK_VERSION {
            major: 2,
            minor: 40,
        };
        // SAFETY: valid pointers; a NULL name means any.
        assert_eq!(
            unsafe { C_GetInterface(std::ptr::null_mut(), &mut v, &mut iface, 0) },
            CKR_OK
        );
        // SAFETY: points into the static interface list.
        assert_eq!(unsafe { (*iface).pFunctionList }, list as *mut c_void);
        // SAFETY: as above, with the 3.0 default.
        assert_eq!(
            unsafe {
                C_GetInterface(
                    INTERFACE_NAME.as_ptr() as *mut _,
                    std::ptr::null_mut(),
                    &mut iface,
                    0,
                )
            },
            CKR_OK
        );
        // SAFETY: a 3.0 list, as the interface says.
        let l3 = unsafe { &*((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_0) };
        assert_eq!(l3.version.major, 3);
        assert!(l3.C_MessageVerifyFinal.is_some());
        // Calls before C_Initialize.
        let mut slots: CK_ULONG = 0;
        // SAFETY: valid pointers.
        assert_eq!(
            unsafe { C_GetSlotList(CK_TRUE, std::ptr::null_mut(), &mut slots) },
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(C_CloseSession(1), CKR_CRYPTOKI_NOT_INITIALIZED);
        assert_eq!(
            C_SignRecoverInit(0, std::ptr::null_mut(), 0),
            CKR_FUNCTION_NOT_SUPPORTED
        );
    }
}
