//! collectd's series identifier, `host/plugin[-instance]/type[-instance]`: parsed and written
//! here once ([`split`], [`write`]), for the owned [`Identifier`] and for callers that only
//! borrow (medic's rules SDK, inside a wasm rule), so all agree by construction. The first `-`
//! of a part splits off its instance, as collectd's `parse_identifier` does.

use std::fmt;

use crate::MAX_NAME_LEN;

/// collectd's series identifier. Empty instance strings mean "not set".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Identifier {
    pub host: String,
    pub plugin: String,
    pub plugin_instance: String,
    pub type_: String,
    pub type_instance: String,
}

impl Identifier {
    /// Parse `host/plugin[-instance]/type[-instance]`; `None` when a part is missing or empty.
    pub fn parse(text: &str) -> Option<Self> {
        let p = split(text)?;
        Some(Self {
            host: p.host.into(),
            plugin: p.plugin.into(),
            plugin_instance: p.plugin_instance.into(),
            type_: p.type_.into(),
            type_instance: p.type_instance.into(),
        })
    }

    /// The parts, borrowed.
    pub fn parts(&self) -> Parts<'_> {
        Parts {
            host: &self.host,
            plugin: &self.plugin,
            plugin_instance: &self.plugin_instance,
            type_: &self.type_,
            type_instance: &self.type_instance,
        }
    }

    /// The first part longer than collectd allows ([`MAX_NAME_LEN`]), as `(name, length)`:
    /// collectd keeps parts in fixed buffers, so a longer one is refused, never cut.
    pub fn too_long(&self) -> Option<(&'static str, usize)> {
        [
            ("host", &self.host),
            ("plugin", &self.plugin),
            ("plugin instance", &self.plugin_instance),
            ("type", &self.type_),
            ("type instance", &self.type_instance),
        ]
        .into_iter()
        .find(|(_, part)| part.len() > MAX_NAME_LEN)
        .map(|(name, part)| (name, part.len()))
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write(f, self.parts())
    }
}

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
