//! Events as collectd's Lua plugin hands them to Lua (its `utils_lua.c`), field for field, so
//! handlers written for it read them unchanged: `values` from 1, `dsnames` and `dstypes` from 0
//! (collectd's quirk, kept), counters and derives as integers, gauges as floats, times in
//! seconds as floats.

use lua_rs_runtime::{Lua, Result, Table};
use medic_rules::{Notification, Sample, Severity, Values};

const NS: f64 = 1e9;

pub fn value_list(lua: &Lua, v: &Values<'_>) -> Result<Table> {
    let t = lua.create_table()?;
    let id = v.identifier();
    t.set("host", id.host.as_str())?;
    t.set("plugin", id.plugin.as_str())?;
    t.set("plugin_instance", id.plugin_instance.as_str())?;
    t.set("type", id.type_.as_str())?;
    t.set("type_instance", id.type_instance.as_str())?;
    let values = lua.create_table()?;
    let dstypes = lua.create_table()?;
    let dsnames = lua.create_table()?;
    for (i, (name, value)) in v.iter().enumerate() {
        let i = i as i64;
        match value.sample {
            Sample::Gauge(g) => values.set(i + 1, g)?,
            Sample::Derive(d) => values.set(i + 1, d)?,
            // collectd pushes its unsigned counters as lua_Integer: the same bits.
            Sample::Counter(c) | Sample::Absolute(c) => values.set(i + 1, c as i64)?,
        }
        dstypes.set(i, ds_type(&value.sample))?;
        dsnames.set(i, name)?;
    }
    t.set("values", values)?;
    t.set("dstypes", dstypes)?;
    t.set("dsnames", dsnames)?;
    t.set("time", v.list.time as f64 / NS)?;
    t.set("interval", v.list.interval as f64 / NS)?;
    Ok(t)
}

pub fn notification(lua: &Lua, n: &Notification) -> Result<Table> {
    let t = lua.create_table()?;
    let id = &n.identifier;
    t.set("host", id.host.as_str())?;
    t.set("plugin", id.plugin.as_str())?;
    t.set("plugin_instance", id.plugin_instance.as_str())?;
    t.set("type", id.type_.as_str())?;
    t.set("type_instance", id.type_instance.as_str())?;
    t.set("severity", severity(n.severity))?;
    t.set("time", n.time as f64 / NS)?;
    t.set("message", n.message.as_str())?;
    t.set("meta", lua.create_table()?)?;
    Ok(t)
}

/// collectd's `NOTIF_*` numbers.
pub fn severity(s: Severity) -> i64 {
    match s {
        Severity::Failure => 1,
        Severity::Warning => 2,
        Severity::Okay => 4,
    }
}

fn ds_type(s: &Sample) -> &'static str {
    match s {
        Sample::Counter(_) => "counter",
        Sample::Gauge(_) => "gauge",
        Sample::Derive(_) => "derive",
        Sample::Absolute(_) => "absolute",
    }
}
