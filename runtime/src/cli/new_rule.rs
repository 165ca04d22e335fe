//! `medic new-rule NAME`: a rule crate that builds as it is: Cargo.toml (the SDK, the crate type
//! a component needs, a small release profile), a rule of a dozen lines with a native test, and
//! a replay test layout (`tests/medic.toml`, `tests/feed.jsonl`) to grow.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where the rules SDK is: `--sdk`, else the SDK medic was built from, if it is still there.
pub fn default_sdk() -> Option<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules-sdk");
    built_from
        .join("Cargo.toml")
        .exists()
        .then(|| built_from.canonicalize().unwrap_or(built_from))
}

/// Write the crate into `dir` (which must not exist yet). Returns the files written.
pub fn new_rule(name: &str, dir: &Path, sdk: &Path) -> anyhow::Result<Vec<PathBuf>> {
    // The crate's name, so the built file is `<name>.wasm` and its stem is the rule's name
    // (cargo names a `low-mem` crate's file `low_mem.wasm`).
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        bail!(
            "`{name}`: a rule name is lower-case letters, digits and `_`, starting with a letter"
        );
    }
    if !sdk.join("Cargo.toml").exists() {
        bail!(
            "{}: no rules SDK there (give --sdk the rules-sdk directory of medic's sources)",
            sdk.display()
        );
    }
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let sdk = sdk.canonicalize()?;
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        ("src/lib.rs", lib_rs(name)),
        ("tests/medic.toml", medic_toml(name)),
        ("tests/feed.jsonl", FEED.to_string()),
        (".gitignore", "/target\n".to_string()),
    ];
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the wasm component medic loads; rlib: the same code under `cargo test`.
crate-type = ["cdylib", "rlib"]

[dependencies]
medic-rules-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

# Not part of any enclosing workspace.
[workspace]

# Small, fast rules: whole-program optimisation is cheap for a crate this size.
[profile.release]
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#,
        sdk = sdk.display()
    )
}

fn lib_rs(name: &str) -> String {
    let ty: String = name
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!(
        r##"//! {name}: run a command when free memory drops below a level (a starting point).
//!
//! Build: `cargo build --target wasm32-wasip2 --release`, then copy
//! `target/wasm32-wasip2/release/{name}.wasm` into medic's `rules.dir`; its config is
//! `[rules.config.{name}]`. Try it on a recorded feed:
//! `medic replay --config tests/medic.toml --rules target/wasm32-wasip2/release/{name}.wasm tests/feed.jsonl`

use medic_rules::{{Config, Ctx, Rule, Subscriptions, Values, export_rule}};

#[derive(serde::Deserialize)]
struct Settings {{
    below: f64,
    service: String,
    command: String,
}}

pub struct {ty} {{
    settings: Settings,
    low: bool,
}}

impl Rule for {ty} {{
    fn init(config: Config, _ctx: &mut Ctx) -> Result<Self, String> {{
        Ok(Self {{ settings: config.parse()?, low: false }})
    }}

    fn subscriptions(&self) -> Subscriptions {{
        Subscriptions::new().values("*/memory/memory-free")
    }}

    fn on_values(&mut self, values: Values<'_>, ctx: &mut Ctx) {{
        let Some(free) = values.first() else {{ return }};
        let low = free < self.settings.below;
        if low && !self.low {{
            let reason = format!("{{}}: {{free}} bytes free", values.identifier());
            ctx.run(&self.settings.service, &self.settings.command, reason);
        }}
        self.low = low;
    }}
}}

export_rule!({ty});

#[cfg(test)]
mod tests {{
    use super::*;
    use medic_rules::Action;
    use medic_rules::testing::Tester;

    #[test]
    fn runs_once_when_memory_gets_low() {{
        let config = r#"{{"below": 1e9, "service": "hello", "command": "exec"}}"#;
        let mut t = Tester::<{ty}>::new(config).unwrap();
        assert!(t.gauge("web/memory/memory-free", 2e9).is_empty());
        let actions = t.gauge("web/memory/memory-free", 5e8);
        assert!(matches!(&actions[..], [Action::Run(r)] if r.command == "exec"));
        assert!(t.gauge("web/memory/memory-free", 4e8).is_empty());
    }}
}}
"##
    )
}

fn medic_toml(name: &str) -> String {
    format!(
        r#"# For `medic replay --config tests/medic.toml --rules <the .wasm> tests/feed.jsonl`.
[daemon]
node = "replay"
state_dir = "/nonexistent/medic-replay"

[rules.config.{name}]
below = 1e9
service = "hello"
command = "exec"

[services.hello.commands]
exec = "echo Hello World!"
"#
    )
}

const FEED: &str = r#"{"kind":"values","host":"web","plugin":"memory","plugin_instance":"","type":"memory","type_instance":"free","time":1764500000,"interval":10,"dsnames":["value"],"dstypes":["gauge"],"values":[2000000000]}
{"kind":"values","host":"web","plugin":"memory","plugin_instance":"","type":"memory","type_instance":"free","time":1764500010,"interval":10,"dsnames":["value"],"dstypes":["gauge"],"values":[500000000]}
{"kind":"values","host":"web","plugin":"memory","plugin_instance":"","type":"memory","type_instance":"free","time":1764500020,"interval":10,"dsnames":["value"],"dstypes":["gauge"],"values":[400000000]}
"#;

#[derive(clap::Args)]
pub struct Args {
    /// The rule's name (its crate, .wasm file stem and config table): lower case, digits, `_`.
    name: String,
    /// Where to write it (default: ./NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The rules-sdk directory of medic's sources (default: the one medic was built from).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

pub fn run(a: Args) -> std::process::ExitCode {
    let dir = a.dir.unwrap_or_else(|| PathBuf::from(&a.name));
    let Some(sdk) = a.sdk.or_else(default_sdk) else {
        return super::fail(
            "where is the rules SDK? give --sdk the rules-sdk directory of medic's sources",
        );
    };
    match new_rule(&a.name, &dir, &sdk) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            println!(
                "next: cd {} && cargo test && cargo build --target wasm32-wasip2 --release",
                dir.display()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => super::fail(format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_crate_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = default_sdk().unwrap();
        for bad in ["", "Low", "1x", "a-b", "a/b"] {
            let err = new_rule(bad, &dir.path().join("x"), &sdk).unwrap_err();
            assert!(err.to_string().contains("a rule name is"), "{bad}: {err}");
        }
        let err = new_rule("ok", dir.path(), &sdk).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }
}
