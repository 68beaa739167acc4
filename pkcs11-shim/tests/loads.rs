//! The built module, `libphonecsp_pkcs11.so`, opened with dlopen as an
//! application opens it: it exports the standard's entry points and
//! answers before `C_Initialize` as the standard says.
//!

use cryptoki_sys::{
    CK_FUNCTION_LIST, CK_RV, CKR_ARGUMENTS_BAD, CKR_CRYPTOKI_NOT_INITIALIZED, CKR_OK,
};

/// target/<profile>/examples/libphonecsp_pkcs11.so, the module as
/// `cargo test` builds it (examples/module.rs); this test runs from
/// target/<profile>/deps/.
fn module_path() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    profile_dir.join("examples/libphonecsp_pkcs11.so")
}

#[test]
fn the_module_exports_its_function_list_and_wants_c_initialize_first() {
    let path = module_path();
    // SAFETY: the module under test; its only load-time code is Rust's.
    let lib = unsafe { libloading::Library::new(&path) }
        .unwrap_or_else(|e| panic!("dlopen {}: {e}", path.display()));
    type GetList = unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV;
    // SAFETY: the symbol has the standard's C_GetFunctionList type.
    let get: libloading::Symbol<GetList> =
        unsafe { lib.get(b"C_GetFunctionList\0") }.expect("C_GetFunctionList");
    // SAFETY: NULL is what the standard says the module must refuse.
    assert_eq!(unsafe { get(std::ptr::null_mut()) }, CKR_ARGUMENTS_BAD);
    let mut list = std::ptr::null_mut();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { get(&mut list) }, CKR_OK);
    // SAFETY: the module's static list, valid while `lib` is loaded.
    let f = unsafe { &*list };
    assert_eq!((f.version.major, f.version.minor), (2, 40));
    let mut count = 0;
    let slots = f.C_GetSlotList.expect("C_GetSlotList");
    // SAFETY: valid pointers; the module is not initialised.
    let rv = unsafe { slots(1, std::ptr::null_mut(), &mut count) };
    assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED);
}
