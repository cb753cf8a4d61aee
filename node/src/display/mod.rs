//! The optional status display on the meter: a 128×64 SSD1306-class OLED on the Pi's I2C bus
//! showing import or export now, solar, today's energy and trades, and the trading state (the
//! same figures as `wattmesh status`'s first block, from [`crate::summary`]).
//!
//! Drawing is pure: [`render`] draws the summary's lines into a [`Framebuffer`] (the panel's
//! own memory layout) with embedded-graphics; [`Ssd1306`] sends a framebuffer to the panel over
//! any embedded-hal 1.0 `I2c`. Both are tested without hardware (a model of the controller
//! stands in for the panel). Only opening the Pi's bus (rppal) and the refresh loop need the
//! `pi` feature.

use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::FONT_6X10;
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;
use embedded_graphics::text::{Baseline, Text};
use serde::{Deserialize, Serialize};

#[cfg(feature = "pi")]
mod task;
#[cfg(feature = "pi")]
pub use task::spawn;

#[cfg(test)]
mod tests;

/// Panel width, pixels.
pub const WIDTH: u32 = 128;
/// Panel height, pixels.
pub const HEIGHT: u32 = 64;
/// Text rows: 6 lines of the 6×10 font.
pub const LINE_HEIGHT: i32 = 10;
/// The first line's top edge (centres 60 pixels of text on 64).
pub const TOP: i32 = 2;

/// The display's settings (`[display]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DisplayConfig {
    /// Drive an SSD1306 OLED (needs a build with `--features pi` and I2C enabled).
    pub enabled: bool,
    /// The I2C bus: 1 is /dev/i2c-1 on header pins 3 (SDA) and 5 (SCL).
    pub i2c_bus: u8,
    /// The panel's 7-bit I2C address: 60 (0x3C) for most modules, 61 (0x3D) for some.
    pub address: u8,
    /// Seconds between refreshes.
    pub refresh_secs: u64,
}

impl Default for DisplayConfig {
    fn default() -> Self {
        DisplayConfig {
            enabled: false,
            i2c_bus: 1,
            address: 0x3C,
            refresh_secs: 5,
        }
    }
}

/// The panel's memory in its own layout: 8 pages of 8 rows; each byte is one column of a page,
/// least significant bit at the top.
#[derive(Clone, PartialEq, Eq)]
pub struct Framebuffer {
    bytes: [u8; (WIDTH * HEIGHT / 8) as usize],
}

impl std::fmt::Debug for Framebuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lit = self.bytes.iter().map(|b| b.count_ones()).sum::<u32>();
        write!(f, "Framebuffer({WIDTH}x{HEIGHT}, {lit} pixels on)")
    }
}

impl Default for Framebuffer {
    fn default() -> Self {
        Framebuffer {
            bytes: [0; (WIDTH * HEIGHT / 8) as usize],
        }
    }
}

impl Framebuffer {
    /// Whether the pixel at (x, y) is on; outside the panel: off.
    pub fn pixel(&self, x: u32, y: u32) -> bool {
        x < WIDTH && y < HEIGHT && self.bytes[index(x, y)] & (1 << (y % 8)) != 0
    }

    /// Turns every pixel off.
    pub fn clear_all(&mut self) {
        self.bytes.fill(0);
    }

    /// The bytes in the panel's order (page 0 column 0 first).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

fn index(x: u32, y: u32) -> usize {
    ((y / 8) * WIDTH + x) as usize
}

impl OriginDimensions for Framebuffer {
    fn size(&self) -> Size {
        Size::new(WIDTH, HEIGHT)
    }
}

impl DrawTarget for Framebuffer {
    type Color = BinaryColor;
    type Error = std::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(p, c) in pixels {
            let (Ok(x), Ok(y)) = (u32::try_from(p.x), u32::try_from(p.y)) else {
                continue;
            };
            if x >= WIDTH || y >= HEIGHT {
                continue;
            }
            let bit = 1u8 << (y % 8);
            if c.is_on() {
                self.bytes[index(x, y)] |= bit;
            } else {
                self.bytes[index(x, y)] &= !bit;
            }
        }
        Ok(())
    }
}

/// Draws `lines` (at most 6 of at most 21 characters; more is cut) into a cleared `fb`.
pub fn render(lines: &[String], fb: &mut Framebuffer) {
    fb.clear_all();
    let style = MonoTextStyle::new(&FONT_6X10, BinaryColor::On);
    for (i, line) in lines.iter().take(6).enumerate() {
        let text: String = line.chars().take(crate::summary::LINE_CHARS).collect();
        let at = Point::new(0, TOP + i as i32 * LINE_HEIGHT);
        // Drawing into memory cannot fail (the error type is Infallible).
        let _ = Text::with_baseline(&text, at, style, Baseline::Top).draw(fb);
    }
}

/// SSD1306 commands used here (datasheet, section 9).
mod cmd {
    pub(super) const DISPLAY_OFF: u8 = 0xAE;
    pub(super) const DISPLAY_ON: u8 = 0xAF;
    pub(super) const CLOCK_DIV: u8 = 0xD5;
    pub(super) const MULTIPLEX: u8 = 0xA8;
    pub(super) const OFFSET: u8 = 0xD3;
    pub(super) const START_LINE_0: u8 = 0x40;
    pub(super) const CHARGE_PUMP: u8 = 0x8D;
    pub(super) const ADDRESSING_MODE: u8 = 0x20;
    pub(super) const SEGMENT_REMAP: u8 = 0xA1;
    pub(super) const COM_SCAN_DEC: u8 = 0xC8;
    pub(super) const COM_PINS: u8 = 0xDA;
    pub(super) const CONTRAST: u8 = 0x81;
    pub(super) const PRECHARGE: u8 = 0xD9;
    pub(super) const VCOMH: u8 = 0xDB;
    pub(super) const RESUME_RAM: u8 = 0xA4;
    pub(super) const NORMAL: u8 = 0xA6;
    pub(super) const COLUMN_RANGE: u8 = 0x21;
    pub(super) const PAGE_RANGE: u8 = 0x22;
}

/// The I2C control byte before commands, and before display data.
const CONTROL_COMMANDS: u8 = 0x00;
const CONTROL_DATA: u8 = 0x40;
/// Data bytes per I2C write (small enough for any I2C adapter's buffer).
const DATA_CHUNK: usize = 16;

/// The initialisation sequence for a 128×64 panel with the internal charge pump, horizontal
/// addressing, and the usual module wiring (segment remap, COM scan from the bottom).
const INIT: &[u8] = &[
    cmd::DISPLAY_OFF,
    cmd::CLOCK_DIV,
    0x80,
    cmd::MULTIPLEX,
    (HEIGHT - 1) as u8,
    cmd::OFFSET,
    0x00,
    cmd::START_LINE_0,
    cmd::CHARGE_PUMP,
    0x14,
    cmd::ADDRESSING_MODE,
    0x00,
    cmd::SEGMENT_REMAP,
    cmd::COM_SCAN_DEC,
    cmd::COM_PINS,
    0x12,
    cmd::CONTRAST,
    0xCF,
    cmd::PRECHARGE,
    0xF1,
    cmd::VCOMH,
    0x40,
    cmd::RESUME_RAM,
    cmd::NORMAL,
    cmd::DISPLAY_ON,
];

/// An SSD1306 on an I2C bus.
#[derive(Debug)]
pub struct Ssd1306<I> {
    i2c: I,
    address: u8,
}

impl<I: embedded_hal::i2c::I2c> Ssd1306<I> {
    /// The panel at `address` (7 bits) on `i2c`.
    pub fn new(i2c: I, address: u8) -> Self {
        Ssd1306 { i2c, address }
    }

    /// Sends the initialisation sequence and turns the panel on.
    pub fn init(&mut self) -> Result<(), I::Error> {
        self.commands(INIT)
    }

    /// Sends a whole framebuffer.
    pub fn flush(&mut self, fb: &Framebuffer) -> Result<(), I::Error> {
        self.commands(&[
            cmd::COLUMN_RANGE,
            0,
            (WIDTH - 1) as u8,
            cmd::PAGE_RANGE,
            0,
            (HEIGHT / 8 - 1) as u8,
        ])?;
        let mut buf = [0u8; DATA_CHUNK + 1];
        buf[0] = CONTROL_DATA;
        for chunk in fb.bytes().chunks(DATA_CHUNK) {
            buf[1..=chunk.len()].copy_from_slice(chunk);
            self.i2c.write(self.address, &buf[..=chunk.len()])?;
        }
        Ok(())
    }

    /// Turns the panel off (its memory is kept).
    pub fn off(&mut self) -> Result<(), I::Error> {
        self.commands(&[cmd::DISPLAY_OFF])
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }

    fn commands(&mut self, list: &[u8]) -> Result<(), I::Error> {
        let mut buf = Vec::with_capacity(list.len() + 1);
        buf.push(CONTROL_COMMANDS);
        buf.extend_from_slice(list);
        self.i2c.write(self.address, &buf)
    }
}
