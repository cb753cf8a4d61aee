//! The display's refresh loop on a Raspberry Pi: rppal opens the I2C bus; every few seconds
//! the node's summary is drawn and sent on a blocking thread (a frame is about 1 KiB, some
//! 100 ms at the bus's default 100 kHz).

use super::{DisplayConfig, Framebuffer, Ssd1306, render};
use anyhow::Context;
use std::time::Duration;

/// Opens the panel and starts refreshing it from `node` until the node stops. An I2C error
/// after start is logged once and retried at the next refresh (a loose cable must not stop the
/// node).
pub fn spawn(
    node: crate::node::NodeHandle,
    cfg: &DisplayConfig,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let i2c = rppal::i2c::I2c::with_bus(cfg.i2c_bus).with_context(|| {
        format!(
            "opening I2C bus {} for the display (enable I2C: docs/DEPLOY.md)",
            cfg.i2c_bus
        )
    })?;
    let mut oled = Ssd1306::new(i2c, cfg.address);
    oled.init().map_err(|e| {
        anyhow::anyhow!(
            "no display answers at I2C address {:#04x} on bus {}: {e}",
            cfg.address,
            cfg.i2c_bus
        )
    })?;
    let every = Duration::from_secs(cfg.refresh_secs.max(1));
    Ok(tokio::spawn(async move {
        let mut failing = false;
        let mut slot = Some(oled);
        loop {
            let Ok(summary) = crate::summary::fetch(&node).await else {
                break;
            };
            let mut fb = Framebuffer::default();
            render(&crate::summary::display_lines(&summary), &mut fb);
            let Some(mut o) = slot.take() else { break };
            let joined = tokio::task::spawn_blocking(move || {
                let r = o.flush(&fb);
                (o, r)
            })
            .await;
            let Ok((o, r)) = joined else { break };
            slot = Some(o);
            match r {
                Err(e) if !failing => {
                    tracing::warn!("the display stopped answering: {e}; retrying");
                    failing = true;
                }
                Ok(()) if failing => {
                    tracing::info!("the display answers again");
                    failing = false;
                }
                _ => {}
            }
            tokio::time::sleep(every).await;
        }
        if let Some(mut o) = slot {
            let _ = tokio::task::spawn_blocking(move || o.off()).await;
        }
    }))
}
