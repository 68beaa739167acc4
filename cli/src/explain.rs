//! After a failure, asks the daemon what is true now, so that the message
//! names the fix: which handsets and tokens the caller can see, whether
//! the handset is connected or paired, how many PIN tries are left, which
//! PIN lengths the token takes. A question that fails itself leaves the
//! failure as it was.

use phonecsp::{Error, HandsetStatus};
use phonecsp_protocol::CkRv;
use phonecsp_protocol::message::token_flags;

use crate::failure::{Advice, Failure};
use crate::session::Context;

/// Whether the daemon showed this caller the administrator's view of the
/// handset (root and the daemon's user see where it is plugged in).
fn admin_view(h: &HandsetStatus) -> bool {
    !h.transport.is_empty()
}

/// A handset that is not connected: unpaired, where the caller can tell
/// (the administrator's view has the pinned key's fingerprint), else away.
pub(crate) fn not_connected(h: &HandsetStatus) -> (Error, Advice) {
    if admin_view(h) && h.fingerprint.is_empty() {
        return (
            Error::token(
                CkRv::TOKEN_NOT_PRESENT,
                format!("handset '{}' is not paired", h.name),
            ),
            Advice::Unpaired {
                handset: h.name.clone(),
            },
        );
    }
    (
        Error::token(
            CkRv::DEVICE_REMOVED,
            format!("handset '{}' is away", h.name),
        ),
        Advice::Away {
            handset: h.name.clone(),
            maybe_unpaired: !admin_view(h),
        },
    )
}

/// `handset` is not among the handsets the caller can see.
pub(crate) fn no_such_handset(handset: &str, seen: &[HandsetStatus]) -> Failure {
    Failure::advised(
        Error::token(
            CkRv::TOKEN_NOT_PRESENT,
            format!("no handset '{handset}' is configured"),
        ),
        Advice::NoSuchHandset {
            handset: handset.to_owned(),
            known: seen.iter().map(|h| h.name.clone()).collect(),
        },
    )
}

/// A command about `token` (if it named one) failed with `f`: for a
/// token or handset that is not there, find out which, and why.
pub(crate) fn after(cx: &Context, token: Option<&str>, f: Failure) -> Failure {
    match f {
        Failure::Client(e) if e.rv() == CkRv::TOKEN_NOT_PRESENT => {
            match not_present(cx, token, &e) {
                Some(advice) => Failure::advised(e, advice),
                None => Failure::Client(e),
            }
        }
        // Away, or (as root sees) never paired: the daemon says "removed"
        // for both when it has no session with the handset.
        Failure::Client(e) if e.rv() == CkRv::DEVICE_REMOVED => match unpaired(cx) {
            Some(advice) => Failure::advised(e, advice),
            None => Failure::Client(e),
        },
        f => f,
    }
}

/// The handset the command is about, if it is one the caller sees.
fn chosen(cx: &Context, handsets: &[HandsetStatus]) -> Option<String> {
    match (&cx.handset, handsets) {
        (Some(h), _) => Some(h.clone()),
        (None, [only]) => Some(only.name.clone()),
        // None, or several (which the command refuses before asking).
        (None, _) => None,
    }
}

fn unpaired(cx: &Context) -> Option<Advice> {
    let handsets = cx.client.list_handsets().ok()?;
    let name = chosen(cx, &handsets)?;
    let status = handsets.iter().find(|h| h.name == name)?;
    match (status.connected, not_connected(status)) {
        (false, (_, advice @ Advice::Unpaired { .. })) => Some(advice),
        _ => None,
    }
}

fn not_present(cx: &Context, token: Option<&str>, e: &Error) -> Option<Advice> {
    let handsets = cx.client.list_handsets().ok()?;
    let name = chosen(cx, &handsets)?;
    let Some(status) = handsets.iter().find(|h| h.name == name) else {
        return Some(Advice::NoSuchHandset {
            handset: name,
            known: handsets.iter().map(|h| h.name.clone()).collect(),
        });
    };
    if !status.connected
        && let (_, advice @ Advice::Unpaired { .. }) = not_connected(status)
    {
        return Some(advice);
    }
    let token = token?;
    let known: Vec<String> = cx
        .client
        .list_tokens()
        .ok()?
        .into_iter()
        .filter(|t| t.handset == name)
        .map(|t| t.token)
        .collect();
    if !known.iter().any(|t| t == token) {
        return Some(Advice::NoSuchToken {
            handset: name,
            token: token.to_owned(),
            known,
            connected: status.connected,
        });
    }
    // A token the caller may use, on a handset that is not connected: the
    // daemon says "not present" (not "removed") only for one not paired.
    (!status.connected && e.rv() == CkRv::TOKEN_NOT_PRESENT)
        .then_some(Advice::Unpaired { handset: name })
}

/// A token found locked before any PIN was tried: what unlocks it.
pub(crate) fn locked(handset: &str, token: &str, info: &phonecsp::TokenDetails) -> Failure {
    Failure::advised(
        Error::token(
            CkRv::PIN_LOCKED,
            format!("{handset}/{token}: too many wrong PINs, the token is locked"),
        ),
        Advice::Locked {
            handset: handset.to_owned(),
            token: token.to_owned(),
            puk: info.flags & token_flags::PUK_SET != 0
                && info.flags & token_flags::SO_PIN_LOCKED == 0,
        },
    )
}

/// Why the PUK of a token cannot be used, if it cannot: none set, or
/// locked for good.
pub(crate) fn puk_unusable(
    handset: &str,
    token: &str,
    info: &phonecsp::TokenDetails,
) -> Option<Advice> {
    let (handset, token) = (handset.to_owned(), token.to_owned());
    if info.flags & token_flags::PUK_SET == 0 {
        // A handset from before PUKs says nothing of one: no advice then.
        return (info.flags & token_flags::LOGIN_REQUIRED != 0)
            .then_some(Advice::NoPuk { handset, token });
    }
    (info.flags & token_flags::SO_PIN_LOCKED != 0).then_some(Advice::PukLocked { handset, token })
}

/// An unblock or PUK change on `handset`/`token` failed with `e`: a wrong
/// PUK says the tries left; a locked one what survives; a new PIN or PUK
/// of the wrong form what it must be.
pub(crate) fn puk_failure(cx: &Context, handset: &str, token: &str, e: Error) -> Failure {
    let rv = e.rv();
    let Ok(info) = cx.client.get_token_info(handset, token) else {
        return Failure::Client(e);
    };
    let (h, t) = (handset.to_owned(), token.to_owned());
    let advice = match rv {
        CkRv::PIN_INCORRECT => Advice::WrongPuk {
            handset: h,
            token: t,
            retries_left: info.puk_retries_left,
        },
        CkRv::PIN_LOCKED | CkRv::USER_TYPE_INVALID => match puk_unusable(handset, token, &info) {
            Some(a) => a,
            None => return Failure::Client(e),
        },
        CkRv::PIN_LEN_RANGE | CkRv::PIN_INVALID => Advice::PukForm {
            handset: h,
            token: t,
            min_pin: info.min_pin,
            max_pin: info.max_pin,
        },
        _ => return Failure::Client(e),
    };
    Failure::advised(e, advice)
}

/// A login or PIN change on `handset`/`token` failed with `e`: for a
/// wrong PIN, say how many tries are left; for a PIN of the wrong length,
/// the lengths the token takes.
pub(crate) fn pin_failure(cx: &Context, handset: &str, token: &str, e: Error) -> Failure {
    let rv = e.rv();
    if rv != CkRv::PIN_INCORRECT && rv != CkRv::PIN_LEN_RANGE && rv != CkRv::PIN_LOCKED {
        return Failure::Client(e);
    }
    let Ok(info) = cx.client.get_token_info(handset, token) else {
        return Failure::Client(e);
    };
    let (handset, token) = (handset.to_owned(), token.to_owned());
    let advice = if rv == CkRv::PIN_INCORRECT || rv == CkRv::PIN_LOCKED {
        Advice::WrongPin {
            handset,
            token,
            retries_left: info.retries_left,
            locked: rv == CkRv::PIN_LOCKED || info.flags & token_flags::PIN_LOCKED != 0,
            puk: info.flags & token_flags::PUK_SET != 0
                && info.flags & token_flags::SO_PIN_LOCKED == 0,
        }
    } else {
        Advice::PinLength {
            handset,
            token,
            min: info.min_pin,
            max: info.max_pin,
        }
    };
    Failure::advised(e, advice)
}
