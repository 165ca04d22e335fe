//! Events as collectd's Lua plugin hands them to Lua (its `utils_lua.c`), field for field, so
//! handlers written for it read them unchanged: `values` from 1, `dsnames` and `dstypes` from 0
//! (collectd's quirk, kept), counters and derives as integers, gauges as floats, times in
//! seconds as floats.

use lua_rs_runtime::{Function, Lua, Result, Table, Value, Variadic};
use medic_rules::{Identifier, Notification, Sample, SeriesMap, Severity, Values};

const NS: f64 = 1e9;

/// Builds value-list tables inside Lua: the identifier strings and data-source names of a
/// series are handed over once, and each value list then costs one call with its numbers.
/// Building the table through the embedding API, field by field, cost 3× as much (each
/// handle is rooted, each key interned).
pub struct ValueTables {
    register: Function,
    build: Function,
    /// What each series number was registered as (the host may reuse a number).
    known: SeriesMap<Identifier>,
}

const BUILDER: &str = r#"
local series = {}
local function register(id, host, plugin, plugin_instance, type, type_instance, names, types)
  series[id] = { host, plugin, plugin_instance, type, type_instance, names, types }
end
local function build(id, time, interval, ...)
  local s = series[id]
  local names, types = s[6], s[7]
  local dsnames, dstypes = {}, {}
  for i = 1, #names do
    dsnames[i - 1] = names[i]
    dstypes[i - 1] = types[i]
  end
  return {
    host = s[1], plugin = s[2], plugin_instance = s[3], type = s[4], type_instance = s[5],
    values = { ... }, dsnames = dsnames, dstypes = dstypes, time = time, interval = interval,
  }
end
return register, build
"#;

impl ValueTables {
    pub fn new(lua: &Lua) -> Result<Self> {
        let (register, build) = lua.load(BUILDER).set_name("=lcm-lua").eval()?;
        Ok(Self {
            register,
            build,
            known: SeriesMap::default(),
        })
    }

    /// The table collectd's Lua plugin would hand a handler for this value list.
    pub fn value_list(&mut self, lua: &Lua, v: &Values<'_>) -> Result<Table> {
        let id = v.identifier();
        if self.known.get(&v.list.series) != Some(id) {
            let names = lua.create_table()?;
            let types = lua.create_table()?;
            for (i, (name, value)) in v.iter().enumerate() {
                names.set(i as i64 + 1, name)?;
                types.set(i as i64 + 1, ds_type(&value.sample))?;
            }
            let text = |s: &str| lua.create_string(s).map(Value::String);
            let args: Variadic<Value> = vec![
                Value::Integer(i64::from(v.list.series)),
                text(&id.host)?,
                text(&id.plugin)?,
                text(&id.plugin_instance)?,
                text(&id.type_)?,
                text(&id.type_instance)?,
                Value::Table(names),
                Value::Table(types),
            ]
            .into();
            self.register.call::<_, ()>(args)?;
            self.known.insert(v.list.series, id.clone());
        }
        let mut args = Vec::with_capacity(3 + v.values.len());
        args.extend([
            Value::Integer(i64::from(v.list.series)),
            Value::Number(v.list.time as f64 / NS),
            Value::Number(v.list.interval as f64 / NS),
        ]);
        args.extend(v.values.iter().map(|value| match value.sample {
            Sample::Gauge(g) => Value::Number(g),
            Sample::Derive(d) => Value::Integer(d),
            // collectd pushes its unsigned counters as lua_Integer: the same bits.
            Sample::Counter(c) | Sample::Absolute(c) => Value::Integer(c as i64),
        }));
        self.build.call(Variadic::from(args))
    }
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
