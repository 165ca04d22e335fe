//! Host side of the WIT contract, generated from the same file as the SDK.

wasmtime::component::bindgen!({
    path: "../rules-sdk/wit",
    world: "rule-v0",
});

pub use self::medic::rules::types::{
    Action, Batch, CommandResult, Event, Identifier, LogLevel, MqttMessage, Notification, RuleInfo,
    Sample, SeriesInfo, Severity, Snapshot, Value, ValueList,
};
