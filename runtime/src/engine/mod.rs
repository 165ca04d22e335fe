//! The engine: rules as WebAssembly components, fed batches of events, returning decisions.
//!
//! ```text
//! sources ─> dispatcher ─(per-rule bounded queue)─> worker ─> instance (wasm) ─> port ─> effects
//!                ^ routes                              ^ swaps
//!             registry (compiler, hot reload) ─────────┘
//! ```
//!
//! Invariant: the engine imports no source and no effect. Events come in as `crate::event`
//! types; decisions leave through [`port`], which the daemon plugs the effects into.

pub mod batch;
pub mod bindings;
pub mod clock;
pub mod compiler;
pub(crate) mod dispatcher;
pub mod driver;
pub mod instance;
pub mod interest;
pub(crate) mod port;
pub(crate) mod queue;
pub(crate) mod registry;
pub(crate) mod routes;
pub mod routing;
pub mod rule;
mod rule_output;
mod rule_state;
pub mod series;
pub(crate) mod status;
pub(crate) mod worker;
