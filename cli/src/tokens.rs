//! `phonecsp tokens`, `objects` and `pin change`: the containers on the
//! handsets, what is in them, and their PINs.

use serde_json::{Value, json};

use crate::failure::Failure;
use crate::output::{class_name, flag_names, hex, print_json, print_text, render_table};
use crate::secret::{ENV_NEW_PIN, ENV_PIN, get_secret, secret_from_env};
use crate::session::{Context, handset};

pub(crate) fn tokens(cx: &Context) -> Result<(), Failure> {
    let list: Vec<_> = cx
        .client
        .list_tokens()?
        .into_iter()
        .filter(|t| cx.handset.as_ref().is_none_or(|h| *h == t.handset))
        .collect();
    if cx.json {
        let v: Vec<Value> = list
            .iter()
            .map(|t| {
                json!({
                    "handset": t.handset,
                    "token": t.token,
                    "flags": t.flags,
                    "flag_names": flag_names(t.flags),
                })
            })
            .collect();
        return print_json(&Value::Array(v));
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.handset.clone(),
                t.token.clone(),
                flag_names(t.flags).join(","),
            ]
        })
        .collect();
    print_text(&render_table(&["HANDSET", "TOKEN", "FLAGS"], &rows))
}

pub(crate) fn objects(cx: &Context, token: &str) -> Result<(), Failure> {
    let h = handset(cx)?;
    let list = cx.client.list_objects(&h, token)?;
    if cx.json {
        let v: Vec<Value> = list
            .iter()
            .map(|o| {
                json!({
                    "class": class_name(o.class),
                    "id": hex(&o.id),
                    "label": o.label,
                })
            })
            .collect();
        return print_json(&Value::Array(v));
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|o| vec![class_name(o.class), hex(&o.id), o.label.clone()])
        .collect();
    print_text(&render_table(&["CLASS", "ID", "LABEL"], &rows))
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
    cx.client.change_pin(&h, token, &old, &new)?;
    if cx.json {
        return print_json(&json!({ "handset": h, "token": token, "changed": true }));
    }
    print_text(&format!("changed the PIN of {h}/{token}\n"))
}
