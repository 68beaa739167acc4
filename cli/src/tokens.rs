//! `phonecsp tokens`, `objects` and `pin change`: the containers on the
//! handsets, what is in them, and their PINs.

use phonecsp::TokenEntry;
use serde_json::json;

use crate::explain::{self, pin_failure};
use crate::failure::Failure;
use crate::output::{class_name, flag_names, hex, say, say_list};
use crate::secret::{
    ENV_NEW_PIN, ENV_NEW_PUK, ENV_PIN, ENV_PUK, get_new_secret, get_secret, secret_from_env,
};
use crate::session::{Context, handset};

/// `phonecsp tokens`. With `--handset`, a handset that is not there, not
/// connected or not paired is a failure with its reason, not an empty
/// table (the tokens remembered of a handset that is away are shown first).
pub(crate) fn tokens(cx: &Context) -> Result<(), Failure> {
    let list: Vec<_> = cx
        .client
        .list_tokens()?
        .into_iter()
        .filter(|t| cx.chose(&t.handset))
        .collect();
    let absent = match &cx.handset {
        Some(h) => {
            let handsets = cx.client.list_handsets()?;
            match handsets.iter().find(|s| s.name == *h) {
                None => return Err(explain::no_such_handset(h, &handsets)),
                Some(s) if !s.connected => Some(explain::not_connected(s)),
                Some(_) => None,
            }
        }
        None => None,
    };
    if let Some((e, advice)) = absent {
        if !list.is_empty() {
            table(cx, &list)?;
        }
        return Err(Failure::advised(e, advice));
    }
    if list.is_empty() && !cx.json {
        eprintln!(
            "phonecsp: no token is available to you{}: see `phonecsp handsets`",
            cx.handset
                .as_ref()
                .map(|h| format!(" on {h}"))
                .unwrap_or_default()
        );
    }
    table(cx, &list)
}

fn table(cx: &Context, list: &[TokenEntry]) -> Result<(), Failure> {
    say_list(
        cx,
        list,
        &["HANDSET", "TOKEN", "FLAGS"],
        |t| {
            json!({
                "handset": t.handset,
                "token": t.token,
                "flags": t.flags,
                "flag_names": flag_names(t.flags),
            })
        },
        |t| {
            vec![
                t.handset.clone(),
                t.token.clone(),
                flag_names(t.flags).join(","),
            ]
        },
    )
}

pub(crate) fn objects(cx: &Context, token: &str) -> Result<(), Failure> {
    let h = handset(cx)?;
    let list = cx.client.list_objects(&h, token)?;
    say_list(
        cx,
        &list,
        &["CLASS", "ID", "LABEL"],
        |o| json!({ "class": class_name(o.class), "id": hex(&o.id), "label": o.label }),
        |o| vec![class_name(o.class), hex(&o.id), o.label.clone()],
    )
}

/// Sets a new PIN with the PUK. A wrong PUK says the tries left; a locked
/// one says what survives.
pub(crate) fn unblock(cx: &Context, token: &str) -> Result<(), Failure> {
    let h = handset(cx)?;
    cx.client.check_daemon()?;
    // Said before the PUK is typed: nothing can be done with a locked one.
    if let Ok(info) = cx.client.get_token_info(&h, token)
        && let Some(advice) = explain::puk_unusable(&h, token, &info)
    {
        return Err(Failure::advised(
            phonecsp::Error::token(
                phonecsp_protocol::CkRv::PIN_LOCKED,
                format!("the PUK of {h}/{token} cannot be used"),
            ),
            advice,
        ));
    }
    let puk = get_secret(ENV_PUK, &format!("PUK of {h}/{token}: "))?;
    let new = get_new_secret(ENV_NEW_PIN, "PIN")?;
    cx.client
        .unblock(&h, token, &puk, &new)
        .map_err(|e| explain::puk_failure(cx, &h, token, e))?;
    say(
        cx,
        json!({ "handset": h, "token": token, "unblocked": true }),
        format!("set a new PIN for {h}/{token}; it has every try again\n"),
    )
}

/// Changes the PUK; the old one is the proof.
pub(crate) fn change_puk(cx: &Context, token: &str) -> Result<(), Failure> {
    let h = handset(cx)?;
    cx.client.check_daemon()?;
    let old = get_secret(ENV_PUK, &format!("Current PUK of {h}/{token}: "))?;
    let new = get_new_secret(ENV_NEW_PUK, "PUK")?;
    cx.client
        .change_puk(&h, token, &old, &new)
        .map_err(|e| explain::puk_failure(cx, &h, token, e))?;
    say(
        cx,
        json!({ "handset": h, "token": token, "changed": true }),
        format!("changed the PUK of {h}/{token}\n"),
    )
}

pub(crate) fn pin_change(cx: &Context, token: &str) -> Result<(), Failure> {
    let h = handset(cx)?;
    cx.client.check_daemon()?;
    let old = get_secret(ENV_PIN, &format!("Current PIN for {h}/{token}: "))?;
    let new = match secret_from_env(ENV_NEW_PIN) {
        Some(p) => p,
        None => {
            let a = get_secret(ENV_NEW_PIN, "New PIN: ")?;
            let b = get_secret(ENV_NEW_PIN, "Repeat the new PIN: ")?;
            if a != b {
                return Err(Failure::Usage(
                    "the new PINs typed differ; nothing was changed".into(),
                ));
            }
            a
        }
    };
    cx.client
        .change_pin(&h, token, &old, &new)
        .map_err(|e| pin_failure(cx, &h, token, e))?;
    say(
        cx,
        json!({ "handset": h, "token": token, "changed": true }),
        format!("changed the PIN of {h}/{token}\n"),
    )
}
