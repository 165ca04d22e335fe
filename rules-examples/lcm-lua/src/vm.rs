//! The Lua side: one sandboxed Lua 5.4 state holding every script's handlers, as
//! lua-collectd-monitor's local mode held them inside collectd (the scripts share globals, as
//! there). What a handler may use is Lua's `string`, `table`, `math`, `utf8`, `coroutine`,
//! `os.time/date/clock/difftime`, the base functions without `load*`/`dofile`/`require`, and
//! collectd's `log_*` functions and `NOTIF_*` constants; no `io`, no `os.execute`, no files.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use lua_rs_runtime::{Function, HostHooks, Lua, Sandbox, SandboxConfig, Table, Value, Variadic};
use medic_rules::LogLevel;

/// A log line a script wrote (through `collectd.log_*` or `print`), handed to the rule's log
/// after the call: Lua callbacks cannot reach the rule's context themselves.
pub type LogBuffer = Rc<RefCell<Vec<(LogLevel, String)>>>;

thread_local! {
    /// What `os.time()` returns: the rule's clock (medic's, which is the feed's in `medic
    /// replay`), set before each event. The VM's clock hook is a plain function, hence a
    /// thread-local (a rule instance is one thread).
    static NOW: Cell<i64> = const { Cell::new(0) };
}

fn unix_time() -> i64 {
    NOW.with(Cell::get)
}

/// Set the clock `os.time()` and `os.date()` read.
pub fn set_now(now: SystemTime) {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    NOW.with(|n| n.set(secs));
}

/// What kind of event a handler takes, in lua-collectd-monitor's words (part of its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Metric,
    Notification,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Metric => "metric",
            Kind::Notification => "notification",
        }
    }
}

/// One handler of one script.
pub struct Handler {
    /// `<file>::metric::<key>`, or `<file>::metric` for a script returning a bare function:
    /// lua-collectd-monitor's name for it, which its notifications carry as their type.
    pub name: String,
    pub kind: Kind,
    func: Function,
}

/// Why a handler gave no task.
#[derive(Debug, PartialEq)]
pub enum Failure {
    /// A Lua error: the message carries the script and line (`/etc/…/a.lua:12: …`).
    Error(String),
    /// It ran past its instruction budget (a loop that does not end).
    Runaway(u64),
    /// It used more memory than the budget allows.
    Memory,
    /// It returned something that is not `nil` or `{service = "…", command = "…"}`.
    InvalidTask(String),
}

/// A command a handler asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub service: String,
    pub command: String,
}

/// A script as the rule's config hands it over: its path (for names and messages) and text.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Script {
    pub file: String,
    pub text: String,
}

pub struct Vm {
    lua: Lua,
    sandbox: Sandbox,
    instruction_limit: Option<u64>,
    pub handlers: Vec<Handler>,
    log: LogBuffer,
}

/// Lists a handler table's `(key, function)` pairs in key order, so handlers run in the same
/// order every time (lua-collectd-monitor's `pairs` order was unspecified).
const LIST_HANDLERS: &str = r#"
return function(cb)
  local out = {}
  for key, func in pairs(cb) do
    out[#out + 1] = { name = tostring(key), func = func }
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end
"#;

impl Vm {
    /// A fresh state with the scripts loaded. A script that does not compile, fails when run,
    /// or returns something other than handlers is an error naming it: the rule refuses the
    /// config, so a broken edit never replaces scripts that work.
    pub fn new(
        scripts: &[Script],
        instruction_limit: Option<u64>,
        memory_limit: usize,
    ) -> Result<Self, String> {
        let mut config = SandboxConfig::strict();
        config.instruction_limit = instruction_limit;
        config.memory_limit_bytes = Some(memory_limit);
        // No host capability but the clock (no files, processes or libraries).
        let lua =
            Lua::with_hooks(HostHooks::new().unix_time(unix_time)).map_err(|e| error_text(&e))?;
        let sandbox = lua.install_sandbox(config).map_err(|e| error_text(&e))?;
        let log = LogBuffer::default();
        install_collectd(&lua, &log)
            .map_err(|e| format!("cannot set up Lua: {}", error_text(&e)))?;
        let list: Function = lua
            .load(LIST_HANDLERS)
            .set_name("=lcm-lua")
            .eval()
            .map_err(|e| error_text(&e))?;
        let mut vm = Self {
            lua,
            sandbox,
            instruction_limit,
            handlers: Vec::new(),
            log,
        };
        for script in scripts {
            vm.load(script, &list)?;
        }
        Ok(vm)
    }

    fn load(&mut self, script: &Script, list: &Function) -> Result<(), String> {
        self.sandbox.reset();
        let loaded: Result<(Value, Value), _> = self
            .lua
            .load(script.text.as_bytes())
            .set_name(format!("@{}", script.file))
            .eval();
        let (metric, notification) = loaded.map_err(|e| match self.sandbox.tripped() {
            Some(_) => format!("{}: stopped while loading: {}", script.file, error_text(&e)),
            None => error_text(&e),
        })?;
        for (cb, kind) in [(metric, Kind::Metric), (notification, Kind::Notification)] {
            let base = format!("{}::{}", script.file, kind.as_str());
            match cb {
                Value::Nil => {}
                Value::Function(func) => self.handlers.push(Handler {
                    name: base,
                    kind,
                    func,
                }),
                Value::Table(table) => {
                    let pairs: Table = list.call(table).map_err(|e| error_text(&e))?;
                    for i in 1..=pairs.len().map_err(|e| error_text(&e))? {
                        let pair: Table = pairs.get(i as i64).map_err(|e| error_text(&e))?;
                        let key: String = pair.get("name").map_err(|e| error_text(&e))?;
                        match pair.get::<_, Value>("func").map_err(|e| error_text(&e))? {
                            Value::Function(func) => self.handlers.push(Handler {
                                name: format!("{base}::{key}"),
                                kind,
                                func,
                            }),
                            other => {
                                return Err(format!(
                                    "{}: {} handler `{key}` is a {}, not a function",
                                    script.file,
                                    kind.as_str(),
                                    type_name(&other)
                                ));
                            }
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "{}: returns a {} as its {} handlers; want a function, a table of \
                         functions or nil",
                        script.file,
                        type_name(&other),
                        kind.as_str()
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    /// Call handler `index` with an event table, on a fresh instruction budget.
    pub fn call(&self, index: usize, event: &Table) -> Result<Option<Task>, Failure> {
        let handler = &self.handlers[index];
        self.sandbox.reset();
        let returned: Result<Value, _> = handler.func.call(event.clone());
        let value = returned.map_err(|e| match self.sandbox.tripped() {
            Some(lua_rs_runtime::TripReason::Instructions) => {
                Failure::Runaway(self.instruction_limit.unwrap_or(0))
            }
            Some(lua_rs_runtime::TripReason::Memory) => Failure::Memory,
            None => match e {
                lua_rs_runtime::Error::Memory => Failure::Memory,
                e => Failure::Error(error_text(&e)),
            },
        })?;
        task(value)
    }

    /// Log lines the scripts wrote since the last call.
    pub fn take_log(&self) -> Vec<(LogLevel, String)> {
        std::mem::take(&mut *self.log.borrow_mut())
    }
}

/// `nil`/`false` (nothing to do) or `{service = "…", command = "…"}`.
fn task(value: Value) -> Result<Option<Task>, Failure> {
    match value {
        Value::Nil | Value::Boolean(false) => Ok(None),
        Value::Table(t) => {
            let field = |key: &str| match t.get::<_, Value>(key) {
                Ok(Value::String(s)) => s.to_str().ok(),
                _ => None,
            };
            match (field("service"), field("command")) {
                (Some(service), Some(command)) => Ok(Some(Task { service, command })),
                _ => Err(Failure::InvalidTask(
                    "a table without string `service` and `command`".into(),
                )),
            }
        }
        other => Err(Failure::InvalidTask(format!("a {}", type_name(&other)))),
    }
}

/// collectd's Lua API as far as handlers use it: `collectd.log_*` into the rule's log, `print`
/// likewise (collectd has no terminal), and the severities lua-collectd-monitor defines.
fn install_collectd(lua: &Lua, log: &LogBuffer) -> lua_rs_runtime::Result<()> {
    let collectd = lua.create_table()?;
    for (name, level) in [
        ("log_error", LogLevel::Error),
        ("log_warning", LogLevel::Warn),
        ("log_notice", LogLevel::Info),
        ("log_info", LogLevel::Info),
        ("log_debug", LogLevel::Debug),
    ] {
        let log = log.clone();
        let f = lua.create_function(move |_, args: Variadic<Value>| {
            log.borrow_mut().push((level, words(&args)));
            Ok(())
        })?;
        collectd.set(name, f)?;
    }
    let globals = lua.globals();
    globals.set("collectd", collectd)?;
    let print_log = log.clone();
    let print = lua.create_function(move |_, args: Variadic<Value>| {
        print_log.borrow_mut().push((LogLevel::Info, words(&args)));
        Ok(())
    })?;
    globals.set("print", print)?;
    globals.set("NOTIF_FAILURE", 1i64)?;
    globals.set("NOTIF_WARNING", 2i64)?;
    globals.set("NOTIF_OKAY", 4i64)?;
    Ok(())
}

/// Log arguments joined by tabs, as `print` writes them.
fn words(args: &[Value]) -> String {
    args.iter().map(show).collect::<Vec<_>>().join("\t")
}

fn show(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.to_str().unwrap_or_else(|_| "<bytes>".into()),
        other => type_name(other).into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::UserData(_) | Value::LightUserData(_) => "userdata",
        Value::Thread(_) => "thread",
    }
}

/// A Lua error's message (`/etc/…/a.lua:12: attempt to index a nil value …`); the library's
/// own `Display` prints a pointer.
pub fn error_text(e: &lua_rs_runtime::Error) -> String {
    use lua_types::value::LuaValue;
    match e {
        lua_rs_runtime::Error::Runtime(v) | lua_rs_runtime::Error::Syntax(v) => match v {
            LuaValue::Str(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            LuaValue::Nil => "error with a nil value".into(),
            _ => "error with a non-string value".into(),
        },
        lua_rs_runtime::Error::Memory => "out of memory".into(),
        other => format!("{other:?}"),
    }
}
