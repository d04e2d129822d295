//! Stream layer: header mutations from route configuration (`*_headers_to_add` with Envoy's
//! append actions, `*_headers_to_remove`).
use model::route::{AppendAction, HeaderAdd};

use super::headers::Headers;

/// Applies adds in order, then nothing else: removals are applied by the caller first, as
/// Envoy removes before it adds.
pub fn add(headers: &mut Headers, adds: &[HeaderAdd]) {
    for one in adds {
        add_header(one, headers);
    }
}

/// Applies one `HeaderValueOption` (Envoy's `append_action` and `keep_empty_value`). Names and
/// values are `Bytes` of the snapshot: the head takes them without copying.
pub fn add_header(add: &HeaderAdd, headers: &mut Headers) {
    if add.value.is_empty() && !add.keep_empty {
        return;
    }
    let present = || headers.contains_bytes(&add.name);
    let set = match add.action {
        AppendAction::AppendIfExistsOrAdd => false,
        AppendAction::AddIfAbsent if present() => return,
        AppendAction::AddIfAbsent => false,
        AppendAction::OverwriteIfExistsOrAdd => true,
        AppendAction::OverwriteIfExists if present() => true,
        AppendAction::OverwriteIfExists => return,
    };
    let (name, value) = (add.name.clone(), add.value.clone());
    match set {
        true => headers.set(name, value),
        false => headers.append(name, value),
    }
}

/// Removes every header named in `names` (lower-case).
pub fn remove(headers: &mut Headers, names: &[String]) {
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_one(action: AppendAction, value: &str) -> HeaderAdd {
        HeaderAdd {
            name: "x-a".into(),
            value: value.to_owned().into(),
            action,
            keep_empty: false,
        }
    }

    #[test]
    fn append_actions_follow_envoy() {
        let mut h = Headers::default();
        h.append("x-a", "1");
        add(&mut h, &[add_one(AppendAction::AppendIfExistsOrAdd, "2")]);
        assert_eq!(h.get_all("x-a").count(), 2);
        add(
            &mut h,
            &[add_one(AppendAction::OverwriteIfExistsOrAdd, "3")],
        );
        assert_eq!(h.get_all("x-a").collect::<Vec<_>>(), vec!["3"]);
        add(&mut h, &[add_one(AppendAction::AddIfAbsent, "4")]);
        assert_eq!(h.get("x-a").unwrap(), "3");
        h.remove("x-a");
        add(&mut h, &[add_one(AppendAction::OverwriteIfExists, "5")]);
        assert!(!h.contains("x-a"));
        add(&mut h, &[add_one(AppendAction::AddIfAbsent, "")]);
        assert!(
            !h.contains("x-a"),
            "empty values are skipped unless keep_empty_value"
        );
    }
}
