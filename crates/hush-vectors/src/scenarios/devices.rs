//! `devices.json`: an account's device list as its primary links and
//! unlinks devices, and lists every device must refuse
//! (`spec/devices.md`).

use anyhow::ensure;
use hush_crypto::devices::MAX_DEVICES;
use hush_crypto::{Device, DeviceList, IdentityKeyPair, LinkCode};
use serde_json::{Value, json};

use super::{Fields, fields, h, last_draw};
use crate::{VectorRng, error_name};

fn identity(rng: &mut VectorRng) -> anyhow::Result<(IdentityKeyPair, [u8; 32])> {
    let key = IdentityKeyPair::generate(rng);
    Ok((key, last_draw(rng)?))
}

/// Draws the primary's, the laptop's, the desktop's and another
/// account's seeds. The primary (`phone`) links the laptop, then the
/// desktop, then unlinks the laptop.
pub(super) fn linked_and_unlinked(rng: &mut VectorRng) -> Fields {
    let (primary, primary_seed) = identity(rng)?;
    let (laptop, laptop_seed) = identity(rng)?;
    let (desktop, desktop_seed) = identity(rng)?;
    let (other, other_seed) = identity(rng)?;
    let account = primary.public();
    let names = ["phone", "laptop", "desktop"];
    let v1 = DeviceList::first(&primary, names[0])?;
    let v2 = v1.with_device(&primary, Device::consent(&laptop, account, names[1])?)?;
    let v3 = v2.with_device(&primary, Device::consent(&desktop, account, names[2])?)?;
    let v4 = v3.without_device(&primary, laptop.public())?;
    for list in [&v1, &v2, &v3, &v4] {
        ensure!(list.verify().is_ok(), "a genuine list does not verify");
    }

    // Every refusal, each from the genuine third version.
    let mut cases = Vec::new();
    let mut case = |name: &str, list: &DeviceList| -> anyhow::Result<()> {
        let bytes = list.to_bytes();
        let result = match DeviceList::try_from(bytes.as_slice()) {
            Ok(decoded) => decoded.verify().map_err(|e| error_name(&e)),
            Err(e) => Err(error_name(&e)),
        };
        let Err(error) = result else {
            anyhow::bail!("case {name} is accepted");
        };
        cases.push(json!({"case": name, "list": h(&bytes), "error": error}));
        Ok(())
    };
    let mut signed_by_other = v3.clone();
    signed_by_other.signature = other.sign(b"not the layout");
    case("signed_by_another_key", &signed_by_other)?;
    let mut version_changed = v3.clone();
    version_changed.version += 1;
    case("version_changed_after_signing", &version_changed)?;
    let mut renamed = v3.clone();
    renamed.devices[1].name = "tablet".into();
    case("name_changed_after_signing", &renamed)?;
    let theirs = Device::consent(&desktop, other.public(), "desktop")?;
    let mut without = v2.clone();
    without.devices.truncate(1);
    let no_consent = without.with_device(&primary, theirs)?;
    case("consent_for_another_account", &no_consent)?;
    let mut swapped = v3.clone();
    swapped.devices.swap(0, 1);
    case("primary_not_first", &swapped)?;
    let mut duplicate = v3.clone();
    duplicate.devices.push(duplicate.devices[1].clone());
    case("duplicate_device", &duplicate)?;
    let mut too_many = v3.clone();
    while too_many.devices.len() <= MAX_DEVICES {
        too_many.devices.push(v3.devices[2].clone());
    }
    case("too_many_devices", &too_many)?;
    let mut no_devices = v3.clone();
    no_devices.devices.clear();
    case("no_devices", &no_devices)?;
    let mut empty_name = v3.clone();
    empty_name.devices[2].name.clear();
    case("empty_name", &empty_name)?;

    let lists: Vec<Value> = [v1, v2, v3, v4].iter().map(|l| h(l.to_bytes())).collect();
    Ok(fields(json!({
        "primary_seed": h(primary_seed),
        "laptop_seed": h(laptop_seed),
        "desktop_seed": h(desktop_seed),
        "other_seed": h(other_seed),
        "names": names,
        "lists": lists,
        "rejections": cases,
    })))
}

/// Draws a link code's 10 bytes: its text, its mailbox and key, and how
/// typed variants read.
pub(super) fn link_code(rng: &mut VectorRng) -> Fields {
    let code = LinkCode::generate(rng);
    let secret = rng.draws().last().cloned().unwrap_or_default();
    let text = code.to_text().to_string();
    let typed = text.to_lowercase().replace('-', " ");
    let confusable = text.replace('1', "L").replace('0', "O");
    let inputs = [
        ("as_shown", text.clone()),
        ("lower_case_with_spaces", typed),
        ("confusables", confusable),
        ("too_short", text[..text.len() - 1].to_string()),
        ("too_long", format!("{text}0")),
        ("bad_character", format!("{}U", &text[..text.len() - 1])),
    ];
    let cases: Vec<Value> = inputs
        .iter()
        .map(|(case, input)| {
            let result = match LinkCode::parse(input) {
                Ok(parsed) => json!({"mailbox": h(parsed.mailbox())}),
                Err(e) => json!({"error": error_name(&e)}),
            };
            json!({"case": case, "input": input, "result": result})
        })
        .collect();
    Ok(fields(json!({
        "secret": h(secret),
        "code": text,
        "mailbox": h(code.mailbox()),
        "key": h(*code.key()),
        "cases": cases,
    })))
}
