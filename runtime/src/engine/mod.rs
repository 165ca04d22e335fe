//! The engine: rules as WebAssembly components, fed batches of events, returning actions.
//!
//! ```text
//! ingest ─> dispatcher ─(per-rule bounded queue)─> worker ─> instance (wasm) ─> actions
//!                ^ routes                          ^ swaps
//!             registry (compiler, hot reload) ─────┘
//! ```

pub mod batch;
pub mod bindings;
pub mod compiler;
pub mod dispatcher;
pub mod instance;
pub mod registry;
pub mod routes;
pub mod rule;
pub mod series;
pub mod status;
pub mod worker;
