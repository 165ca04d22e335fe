#![no_main]
//! Any payload on the command topic: a request, or an error that says why (with the task id
//! when one can be read), never a panic; the reply to it always serializes.

use libfuzzer_sys::fuzz_target;
use medic::mqtt::lcm::{Reply, age, code, parse_request};

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(request) => {
            if let Some(ts) = &request.timestamp {
                let _ = age(
                    ts,
                    jiff::Timestamp::UNIX_EPOCH,
                    std::time::Duration::from_secs(30),
                );
            }
            let _ = Reply::new(request.task_id, 0, format!("{:?}", request.ask)).to_json();
        }
        Err(invalid) => {
            if let Some(task_id) = invalid.task_id {
                let _ = Reply::new(task_id, code::INVALID_REQUEST, invalid.message).to_json();
            }
        }
    }
});
