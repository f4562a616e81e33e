//! Rust-side log events: modules log with `tracing` macros, and this layer hands each event to
//! the loop thread, which writes it through Python's `logging` (logger `rsgi.error`). The I/O
//! thread never takes the GIL for it.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use tracing::field::{Field, Visit};
use tracing::{Event as TracingEvent, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::handoff::bridge::{Bridge, LogLevel};

/// The bridge of the running server; events before one starts are dropped.
static TARGET: RwLock<Option<Arc<Bridge>>> = RwLock::new(None);

/// Sends this process's Rust log events to `bridge` from now on.
pub fn route_to(bridge: Arc<Bridge>) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Another subscriber (an embedding application's) wins; ours then stays unused.
        let _ = tracing_subscriber::registry().with(ToPython).try_init();
    });
    *TARGET.write() = Some(bridge);
}

struct ToPython;

impl<S: Subscriber> Layer<S> for ToPython {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        *metadata.level() <= Level::WARN
    }

    fn on_event(&self, event: &TracingEvent<'_>, _: Context<'_, S>) {
        let Some(bridge) = TARGET.read().clone() else {
            return;
        };
        let level = if *event.metadata().level() == Level::ERROR {
            LogLevel::Error
        } else {
            LogLevel::Warning
        };
        let mut text = Message(String::new());
        event.record(&mut text);
        bridge.log(level, text.0);
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}
