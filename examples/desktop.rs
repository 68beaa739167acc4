//! A desktop program's use of phonecsp, in Rust with zbus: list the keys
//! on the phones, sign with the first (the daemon asks for the PIN through
//! the user's agent, e.g. `phonecsp agent`), and, with `--watch N`, print
//! the next N times a phone comes or goes.
//!
//! Run: `cargo run -p phonecsp-tests --example desktop [-- --watch 2]`;
//! `PHONECSP_BUS` names a bus address other than the system bus.

use futures_util::StreamExt;
use std::collections::HashMap;
use zbus::fdo::{ObjectManagerProxy, PropertiesProxy};
use zbus::{Connection, Variant};

const SERVICE: &str = "org.phonecsp.CryptoProvider1";

#[tokio::main]
async fn main() -> zbus::Result<()> {
    let conn = match std::env::var("PHONECSP_BUS") {
        Ok(address) => {
            zbus::connection::Builder::address(address.as_str())
                .build()
                .await?
        }
        Err(_) => Connection::system().await?,
    };
    let manager = ObjectManagerProxy::builder(&conn)
        .destination(SERVICE)
        .path("/org/phonecsp")
        .build()
        .await?;

    // Every key, with its label and size, from one call.
    let objects = manager.get_managed_objects().await?;
    let mut keys: Vec<_> = objects
        .iter()
        .filter_map(|(path, ifaces)| Some((path, ifaces.get("org.phonecsp.Key1")?)))
        .collect();
    keys.sort_by_key(|(path, _)| path.as_str().to_owned());
    for (path, key) in &keys {
        let label = String::try_from(key["Label"].try_clone()?)?;
        let bits = u32::try_from(&key["Bits"])?;
        println!("key {path} '{label}' rsa-{bits}");
    }

    // Sign with the first key; not logged in, the daemon asks the agent.
    if let Some((path, _)) = keys.first() {
        let options: HashMap<&str, Variant<'_>> = HashMap::new();
        let reply = conn
            .call_method(
                Some(SERVICE),
                path.as_str(),
                Some("org.phonecsp.Key1"),
                "Sign",
                &(
                    "rsa-pkcs1-sha256",
                    options,
                    b"hello from the desktop".as_slice(),
                ),
            )
            .await?;
        let signature: Vec<u8> = reply.body().deserialize()?;
        println!("signature: {} bytes", signature.len());
    }

    // Watch the phones come and go.
    let args: Vec<String> = std::env::args().collect();
    let watch = match args.iter().position(|a| a == "--watch") {
        Some(i) => args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(1),
        None => 0,
    };
    let handsets: Vec<_> = objects
        .iter()
        .filter(|(_, ifaces)| ifaces.contains_key("org.phonecsp.Handset1"))
        .map(|(path, _)| path.clone())
        .collect();
    let mut changes = futures_util::stream::SelectAll::new();
    for path in &handsets {
        let props = PropertiesProxy::builder(&conn)
            .destination(SERVICE)
            .path(path.clone())
            .build()
            .await?;
        changes.push(
            props
                .receive_properties_changed()
                .await?
                .map(|s| (s, path.clone())),
        );
    }
    if watch > 0 {
        println!("watching");
    }
    let mut seen = 0;
    while seen < watch {
        let Some((signal, path)) = changes.next().await else {
            break;
        };
        let args = signal.args()?;
        if let Some(v) = args.changed_properties().get("Connected") {
            let now = if bool::try_from(v)? {
                "connected"
            } else {
                "away"
            };
            println!("{path}: {now}");
            seen += 1;
        }
    }
    Ok(())
}
