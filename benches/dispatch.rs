//! Values/s through the `threshold` rule: as a wasm component inside medic's engine, and the same
//! rule code compiled natively and driven by the SDK's runner (no wasm boundary), in batches of
//! 1, 64, 256 and 1024 (`wasm-quick`: the Winch build that serves a new build until Cranelift's
//! is ready); and the same logic as a lua-collectd-monitor handler run by LuaJIT
//! (`lua`: each value list handed over as the Lua table collectd's Lua plugin builds), and that
//! same handler script run unchanged by the `lcm-lua` rule (`wasm-lcm-lua`: a Lua VM inside the
//! wasm rule, issue 11). Budgets: wasm ≤ 1.5× native per value at 256, and wasm faster than
//! LuaJIT.
//!
//! The `emit` group: the rule-side cost of emitting a record per value (`influx-forward`).
//!
//! Needs target/rules/threshold.wasm (scripts/build-rules.sh). Run:
//! `cargo bench -p medic-benches --bench dispatch`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use medic::engine::batch::BatchBuilder;
use medic::engine::bindings as wit;
use medic::engine::compiler::{Compiler, Tier};
use medic::engine::instance::{Limits, RuleInstance};
use medic::engine::rule::{HostParts, RuleSpec, rule_config};
use medic::engine::series::SeriesTable;
use medic::event::{Identifier, Sample, ValueList};
use medic::store::Store;
use medic::types_db::TypesDb;
use medic_rules::testing::TestHost;

const BATCHES: [usize; 4] = [1, 64, 256, 1024];
/// Distinct series the values come from (hosts reporting free memory).
const SERIES: usize = 100;

const CONFIG: &str = r#"
pattern = "*/memory/memory-free"
below = 1e8
clear = 2e8
for = "30s"
service = "hello"
command = "exec"
"#;

/// The value of the i-th sample: well above the threshold, as almost all values are in practice.
fn free_bytes(i: usize) -> f64 {
    4e9 + (i % 1000) as f64
}

/// The rule compiled by Cranelift (`Tier::Optimized`, what serves once a build is known) or by
/// Winch (`Tier::Quick`, what serves a new build while Cranelift compiles it).
fn wasm_instance(series: Arc<SeriesTable>, rule: &str, config: &str, tier: Tier) -> RuleInstance {
    let bytes = std::fs::read(medic_integration::rule(rule)).unwrap();
    let compiler = Compiler::new(None).unwrap();
    let compiled = match tier {
        Tier::Optimized => compiler.compile(&bytes).unwrap(),
        Tier::Quick => compiler
            .compile_quick(&bytes)
            .unwrap()
            .expect("no quick tier on this platform"),
    };
    let mut rules = medic::config::Rules::default();
    rules
        .config
        .insert(rule.into(), toml::from_str(config).unwrap());
    let spec = RuleSpec {
        name: rule.into(),
        config: rule_config(&rules, rule).unwrap(),
        topics_granted: Vec::new(),
        compiled,
    };
    let host = HostParts {
        state: Store::in_memory().unwrap(),
        held: Default::default(),
        series,
        clock: Default::default(),
        limits: Limits {
            call_timeout: Duration::from_secs(10),
            memory_bytes: 64 << 20,
        },
        history: None,
    };
    let instance = spec.instantiate(&host).unwrap();
    // The compiler (and its epoch ticker) must outlive the instance; leak it for the bench.
    std::mem::forget(compiler);
    spec.start(instance)
        .map_err(|e| e.to_string())
        .unwrap()
        .instance
}

fn time(k: usize) -> u64 {
    1_700_000_000_000_000_000 + k as u64 * 1_000_000_000
}

fn wasm_batch(series: &SeriesTable, n: usize, offset: usize) -> wit::Batch {
    let mut b = BatchBuilder::default();
    for k in offset..offset + n {
        let vl = ValueList {
            identifier: Identifier::parse(&format!("host{}/memory/memory-free", k % SERIES))
                .unwrap(),
            time: time(k),
            interval: 10_000_000_000,
            samples: vec![Sample::Gauge(free_bytes(k))],
        };
        b.push_values(&series.observe(&vl, series.now()).unwrap().obs);
    }
    b.batch().clone()
}

fn native_batch(host: &mut TestHost, n: usize, offset: usize) -> medic_rules::Batch {
    let mut b = medic_rules::Batch::default();
    for k in offset..offset + n {
        let series = host.intern(
            &format!("host{}/memory/memory-free", k % SERIES),
            &["value"],
        );
        b.events
            .push(medic_rules::Event::Values(medic_rules::ValueList {
                series,
                time: time(k),
                interval: 10_000_000_000,
                first: b.values.len() as u32,
                count: 1,
            }));
        b.values.push(medic_rules::Value {
            sample: medic_rules::Sample::Gauge(free_bytes(k)),
            rate: None,
        });
    }
    b
}

/// The threshold logic as a lua-collectd-monitor metric handler: per-series state, fire once
/// after `for` below `below`, re-arm above `clear`.
const LUA_HANDLER: &str = r#"
local below, clear, hold = 1e8, 2e8, 30
local state = {}
return function(vl)
  if vl.plugin ~= "memory" or vl.type ~= "memory" or vl.type_instance ~= "free" then
    return nil
  end
  local key = vl.host .. "/" .. vl.plugin .. "/" .. vl.type .. "-" .. vl.type_instance
  local s = state[key]
  if s == nil then
    s = { since = nil, fired = false }
    state[key] = s
  end
  local v = vl.values[1]
  if v < below then
    if s.since == nil then s.since = vl.time end
    if not s.fired and vl.time - s.since >= hold then
      s.fired = true
      return { service = "hello", command = "exec" }
    end
  elseif v > clear then
    s.since = nil
    s.fired = false
  end
  return nil
end
"#;

/// A batch for the Lua handler: what collectd's Lua plugin turns into a table per value list.
struct LuaValue {
    host: String,
    time: f64,
    value: f64,
}

fn lua_batch(n: usize, offset: usize) -> Vec<LuaValue> {
    (offset..offset + n)
        .map(|k| LuaValue {
            host: format!("host{}", k % SERIES),
            time: time(k) as f64 / 1e9,
            value: free_bytes(k),
        })
        .collect()
}

/// Hand each value list to the handler as collectd's Lua plugin does (a fresh table with the
/// identifier, `values`, `dsnames`, `dstypes`, `time`, `interval`) and keep what it returns.
fn lua_dispatch(lua: &mlua::Lua, handler: &mlua::Function, batch: &[LuaValue]) -> usize {
    let mut asked = 0;
    for v in batch {
        let t = lua.create_table().unwrap();
        t.set("host", v.host.as_str()).unwrap();
        t.set("plugin", "memory").unwrap();
        t.set("plugin_instance", "").unwrap();
        t.set("type", "memory").unwrap();
        t.set("type_instance", "free").unwrap();
        t.set("values", [v.value]).unwrap();
        t.set("dsnames", ["value"]).unwrap();
        t.set("dstypes", ["gauge"]).unwrap();
        t.set("time", v.time).unwrap();
        t.set("interval", 10.0).unwrap();
        let r: mlua::Value = handler.call(t).unwrap();
        asked += usize::from(!r.is_nil());
    }
    asked
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("threshold");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));

    let series = Arc::new(SeriesTable::new(Arc::new(TypesDb::load(&[
        "/usr/share/collectd/types.db",
    ]))));
    let mut wasm = wasm_instance(series.clone(), "threshold", CONFIG, Tier::Optimized);
    let mut quick = wasm_instance(series.clone(), "threshold", CONFIG, Tier::Quick);
    // A rule that does nothing: what delivering a batch costs by itself.
    let mut noop = wasm_instance(series.clone(), "faulty", "mode = \"none\"", Tier::Optimized);
    // lua-collectd-monitor's way: the same logic as a Lua handler, in the lcm-lua rule.
    let lcm_config =
        format!("scripts = [{{ file = \"threshold.lua\", text = '''{LUA_HANDLER}''' }}]");
    let mut lcm = wasm_instance(series.clone(), "lcm-lua", &lcm_config, Tier::Optimized);
    // Teach the instances every series once, as a running daemon would have.
    wasm.on_events(&wasm_batch(&series, SERIES, 0)).unwrap();
    quick.on_events(&wasm_batch(&series, SERIES, 0)).unwrap();
    lcm.on_events(&wasm_batch(&series, SERIES, 0)).unwrap();

    let mut host = TestHost::default();
    let json = serde_json::to_string(&toml::from_str::<toml::Table>(CONFIG).unwrap()).unwrap();
    let config = medic_rules::Config::from_json(&json).unwrap().entries();
    let mut native =
        medic_rules::__private::Runner::<threshold::Threshold>::new("threshold", "bench");
    native.init(&mut host, config).unwrap();
    let lua = mlua::Lua::new();
    let handler: mlua::Function = lua.load(LUA_HANDLER).eval().unwrap();

    for n in BATCHES {
        group.throughput(Throughput::Elements(n as u64));
        let batch = wasm_batch(&series, n, SERIES);
        group.bench_with_input(BenchmarkId::new("wasm", n), &batch, |b, batch| {
            b.iter(|| black_box(wasm.on_events(batch).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("wasm-quick", n), &batch, |b, batch| {
            b.iter(|| black_box(quick.on_events(batch).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("wasm-noop", n), &batch, |b, batch| {
            b.iter(|| black_box(noop.on_events(batch).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("wasm-lcm-lua", n), &batch, |b, batch| {
            b.iter(|| black_box(lcm.on_events(batch).unwrap()))
        });
        let batch = native_batch(&mut host, n, SERIES);
        group.bench_with_input(BenchmarkId::new("native", n), &batch, |b, batch| {
            b.iter(|| black_box(native.on_events(&mut host, batch)))
        });
        let batch = lua_batch(n, SERIES);
        group.bench_with_input(BenchmarkId::new("luajit", n), &batch, |b, batch| {
            b.iter(|| black_box(lua_dispatch(&lua, &handler, batch)))
        });
    }
    group.finish();
}

/// The rule-side cost of emitting: `influx-forward` turns each value list into a line of Influx
/// line protocol and emits it (one `emit` action per value), beside the no-op rule.
fn emit(c: &mut Criterion) {
    let mut group = c.benchmark_group("emit");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let series = Arc::new(SeriesTable::new(Arc::new(TypesDb::load(&[
        "/usr/share/collectd/types.db",
    ]))));
    let config = "patterns = [\"*/memory/memory-free\"]\nsink = \"vm\"\n";
    let mut forward = wasm_instance(series.clone(), "influx-forward", config, Tier::Optimized);
    let mut noop = wasm_instance(series.clone(), "faulty", "mode = \"none\"", Tier::Optimized);
    forward.on_events(&wasm_batch(&series, SERIES, 0)).unwrap();
    let n = 256;
    group.throughput(Throughput::Elements(n as u64));
    let batch = wasm_batch(&series, n, SERIES);
    assert_eq!(
        forward.on_events(&batch).unwrap().len(),
        n,
        "one record per value"
    );
    group.bench_with_input(BenchmarkId::new("influx-forward", n), &batch, |b, batch| {
        b.iter(|| black_box(forward.on_events(batch).unwrap()))
    });
    group.bench_with_input(BenchmarkId::new("noop", n), &batch, |b, batch| {
        b.iter(|| black_box(noop.on_events(batch).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, dispatch, emit);
criterion_main!(benches);
