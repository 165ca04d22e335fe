//! collectd's series identifier as text, `host/plugin[-instance]/type[-instance]`: parsed and
//! written here once, for the SDK's `Identifier` and the host's alike, so both agree by
//! construction. The first `-` of a part splits off its instance, as collectd's
//! `parse_identifier` does.

use std::fmt;

/// The five parts of an identifier, borrowed from its text. Empty instances mean "not set".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    pub host: &'a str,
    pub plugin: &'a str,
    pub plugin_instance: &'a str,
    pub type_: &'a str,
    pub type_instance: &'a str,
}

/// Split `host/plugin[-instance]/type[-instance]`; `None` when a part is missing or empty.
pub fn split(text: &str) -> Option<Parts<'_>> {
    let mut parts = text.splitn(3, '/');
    let (host, plugin, ty) = (parts.next()?, parts.next()?, parts.next()?);
    if host.is_empty() || plugin.is_empty() || ty.is_empty() {
        return None;
    }
    let (plugin, plugin_instance) = instance(plugin);
    let (type_, type_instance) = instance(ty);
    Some(Parts {
        host,
        plugin,
        plugin_instance,
        type_,
        type_instance,
    })
}

fn instance(part: &str) -> (&str, &str) {
    part.split_once('-').unwrap_or((part, ""))
}

/// Write the parts back as collectd does (an empty instance leaves out its `-`).
pub fn write(f: &mut impl fmt::Write, p: Parts<'_>) -> fmt::Result {
    write!(f, "{}/{}", p.host, p.plugin)?;
    if !p.plugin_instance.is_empty() {
        write!(f, "-{}", p.plugin_instance)?;
    }
    write!(f, "/{}", p.type_)?;
    if !p.type_instance.is_empty() {
        write!(f, "-{}", p.type_instance)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_splits_at_the_first_dash() {
        let p = split("web-1/cpu-0-x/percent-idle").unwrap();
        assert_eq!(
            (
                p.host,
                p.plugin,
                p.plugin_instance,
                p.type_,
                p.type_instance
            ),
            ("web-1", "cpu", "0-x", "percent", "idle")
        );
        let mut text = String::new();
        write(&mut text, p).unwrap();
        assert_eq!(text, "web-1/cpu-0-x/percent-idle");
        assert!(split("h/load").is_none());
        assert!(split("h//load").is_none());
    }
}
