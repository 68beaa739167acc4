//! `phonecsp tokens`, `objects` and `pin change`: the containers on the
//! handsets, what is in them, and their PINs.

use phonecsp::TokenEntry;
use serde_json::json;

use crate::explain::{self, pin_failure};
use crate::failure::Failure;
use crate::output::{class_name, flag_names, hex, say, say_list};
use crate::secret::{ENV_NEW_PIN, ENV_NEW_PUK, ENV_PIN, ENV_PUK, get_new_secret, get_secret};
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

/// The three changes of a secret made with another as its proof.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretChange {
    /// A new PIN, with the current one.
    Pin,
    /// A new PUK, with the current one.
    Puk,
    /// A new PIN with the PUK, also on a locked token.
    Unblock,
}

/// `pin change`, `change-puk` and `unblock`: the proof asked first, the new
/// secret twice, then the daemon. A wrong secret says the tries left; a
/// locked PUK says what survives, before it is typed.
pub(crate) fn change_secret(
    cx: &Context,
    token: &str,
    change: SecretChange,
) -> Result<(), Failure> {
    let h = handset(cx)?;
    cx.client.check_daemon()?;
    if change == SecretChange::Unblock
        && let Ok(info) = cx.client.get_token_info(&h, token)
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
    let (proof_var, proof_prompt, new_var, new_what) = match change {
        SecretChange::Pin => (ENV_PIN, "Current PIN for", ENV_NEW_PIN, "PIN"),
        SecretChange::Puk => (ENV_PUK, "Current PUK of", ENV_NEW_PUK, "PUK"),
        SecretChange::Unblock => (ENV_PUK, "PUK of", ENV_NEW_PIN, "PIN"),
    };
    let proof = get_secret(proof_var, &format!("{proof_prompt} {h}/{token}: "))?;
    let new = get_new_secret(new_var, new_what)?;
    let (done, message) = match change {
        SecretChange::Pin => cx
            .client
            .change_pin(&h, token, &proof, &new)
            .map_err(|e| pin_failure(cx, &h, token, e))
            .map(|()| ("changed", format!("changed the PIN of {h}/{token}\n"))),
        SecretChange::Puk => cx
            .client
            .change_puk(&h, token, &proof, &new)
            .map_err(|e| explain::puk_failure(cx, &h, token, e))
            .map(|()| ("changed", format!("changed the PUK of {h}/{token}\n"))),
        SecretChange::Unblock => cx
            .client
            .unblock(&h, token, &proof, &new)
            .map_err(|e| explain::puk_failure(cx, &h, token, e))
            .map(|()| {
                let message = format!("set a new PIN for {h}/{token}; it has every try again\n");
                ("unblocked", message)
            }),
    }?;
    say(
        cx,
        json!({ "handset": h, "token": token, done: true }),
        message,
    )
}
