//! The display without hardware: text read back from the pixels, and the bytes on the I2C bus
//! played into a model of the SSD1306 controller.

use super::*;
use crate::summary::{Summary, TradingState, display_lines};
use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, Operation};

/// Reads the text back from the pixels: each 6×10 cell is matched against every printable
/// ASCII glyph drawn alone. Trailing spaces are dropped.
fn read_back(fb: &Framebuffer) -> Vec<String> {
    let glyphs: Vec<(char, Framebuffer)> = (0x20u8..0x7f)
        .map(|b| {
            let mut g = Framebuffer::default();
            let style = MonoTextStyle::new(&FONT_6X10, BinaryColor::On);
            let _ = Text::with_baseline(
                &(b as char).to_string(),
                Point::zero(),
                style,
                Baseline::Top,
            )
            .draw(&mut g);
            (b as char, g)
        })
        .collect();
    let cell = |fb: &Framebuffer, x0: u32, y0: u32, g: &Framebuffer| {
        (0..6).all(|dx| (0..10).all(|dy| fb.pixel(x0 + dx, y0 + dy) == g.pixel(dx, dy)))
    };
    (0..6)
        .map(|row| {
            let y0 = (TOP + row * LINE_HEIGHT) as u32;
            let line: String = (0..WIDTH / 6)
                .map(|col| {
                    let found: Vec<char> = glyphs
                        .iter()
                        .filter(|(_, g)| cell(fb, col * 6, y0, g))
                        .map(|(c, _)| *c)
                        .collect();
                    assert_eq!(found.len(), 1, "row {row} column {col}: {found:?}");
                    found[0]
                })
                .collect();
            line.trim_end().to_owned()
        })
        .collect()
}

fn sample(grid_w: i64, state: TradingState) -> Summary {
    Summary {
        // 2026-06-01 18:30 UTC = 13:30 in Ames (CDT is UTC-5, but the trader's fixed offset is
        // CST, UTC-6: 12:30).
        now_ms: 1_780_338_600_000,
        utc_offset_minutes: -360,
        metered: true,
        grid_w,
        solar_w: 4_120,
        today_import_wh: 6_240,
        today_export_wh: 11_460,
        today_sold_wh: 3_150,
        today_bought_wh: 0,
        today_trades: 7,
        peers: 4,
        offers: 12,
        state,
    }
}

#[test]
fn the_summary_is_drawn_as_six_readable_lines() {
    let s = sample(-2_345, TradingState::Auto);
    let lines = display_lines(&s);
    assert_eq!(
        lines,
        vec![
            "EXPORT        2.35 kW",
            "Solar         4.12 kW",
            "Today in 6.2 out 11.5",
            "Sold 3.2 Bought 0.0",
            "AUTO TRADING",
            "12:30 4p 7t 12o",
        ]
    );
    let mut fb = Framebuffer::default();
    render(&lines, &mut fb);
    assert_eq!(read_back(&fb), lines);
    // Nothing is drawn outside the text rows or past the last column of a 21-character line.
    for x in 0..WIDTH {
        for y in (0..TOP as u32).chain((TOP + 6 * LINE_HEIGHT) as u32..HEIGHT) {
            assert!(!fb.pixel(x, y), "({x}, {y})");
        }
    }
    for y in 0..HEIGHT {
        assert!(!fb.pixel(126, y) && !fb.pixel(127, y));
    }
}

#[test]
fn import_and_states_change_what_is_shown() {
    let mut fb = Framebuffer::default();
    let s = sample(1_500, TradingState::ClockUnsynced);
    render(&display_lines(&s), &mut fb);
    let text = read_back(&fb);
    assert_eq!(text[0], "IMPORT        1.50 kW");
    assert_eq!(text[4], "CLOCK NOT SYNCED");
    // A redraw clears what was there before.
    let s = Summary {
        metered: false,
        ..sample(0, TradingState::Offline)
    };
    render(&display_lines(&s), &mut fb);
    let text = read_back(&fb);
    assert_eq!(text[0], "No meter");
    assert_eq!(text[1], "");
    assert_eq!(text[4], "OFFLINE");
    // Over-long lines are cut at 21 characters rather than wrapped or drawn off the panel.
    render(&["X".repeat(30)], &mut fb);
    assert_eq!(read_back(&fb)[0], "X".repeat(21));
}

/// A model of the SSD1306's I2C interface: the control byte, the commands this driver may
/// send (an unknown one fails the test), horizontal addressing into the 1 KiB display RAM.
#[derive(Debug)]
struct Panel {
    address: u8,
    ram: [u8; 1024],
    on: bool,
    charge_pump: bool,
    mode: Option<u8>,
    cols: (u8, u8),
    pages: (u8, u8),
    col: u8,
    page: u8,
    writes: usize,
    fail: bool,
}

impl Panel {
    fn new(address: u8) -> Panel {
        Panel {
            address,
            ram: [0xA5; 1024],
            on: false,
            charge_pump: false,
            mode: None,
            cols: (0, 127),
            pages: (0, 7),
            col: 0,
            page: 0,
            writes: 0,
            fail: false,
        }
    }

    fn command(&mut self, b: &[u8]) -> usize {
        let args = |n: usize| {
            assert!(b.len() > n, "command {:#04x} without its arguments", b[0]);
            n + 1
        };
        match b[0] {
            0xAE => {
                self.on = false;
                1
            }
            0xAF => {
                self.on = true;
                1
            }
            0x40 | 0xA1 | 0xC8 | 0xA4 | 0xA6 => 1,
            0xD5 | 0xA8 | 0xD3 | 0xDA | 0x81 | 0xD9 | 0xDB => args(1),
            0x8D => {
                self.charge_pump = b[1] == 0x14;
                args(1)
            }
            0x20 => {
                self.mode = Some(b[1]);
                args(1)
            }
            0x21 => {
                self.cols = (b[1], b[2]);
                self.col = b[1];
                args(2)
            }
            0x22 => {
                self.pages = (b[1], b[2]);
                self.page = b[1];
                args(2)
            }
            other => panic!("unexpected SSD1306 command {other:#04x}"),
        }
    }

    fn data(&mut self, d: u8) {
        assert_eq!(
            self.mode,
            Some(0),
            "data before horizontal addressing was set"
        );
        self.ram[self.page as usize * 128 + self.col as usize] = d;
        if self.col == self.cols.1 {
            self.col = self.cols.0;
            self.page = if self.page == self.pages.1 {
                self.pages.0
            } else {
                self.page + 1
            };
        } else {
            self.col += 1;
        }
    }
}

impl ErrorType for Panel {
    type Error = ErrorKind;
}

impl I2c for Panel {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        if address != self.address || self.fail {
            return Err(ErrorKind::NoAcknowledge(
                embedded_hal::i2c::NoAcknowledgeSource::Address,
            ));
        }
        for op in operations {
            let Operation::Write(bytes) = op else {
                panic!("the driver never reads");
            };
            self.writes += 1;
            match bytes[0] {
                CONTROL_COMMANDS => {
                    let mut rest = &bytes[1..];
                    while !rest.is_empty() {
                        let n = self.command(rest);
                        rest = &rest[n..];
                    }
                }
                CONTROL_DATA => bytes[1..].iter().for_each(|d| self.data(*d)),
                other => panic!("bad control byte {other:#04x}"),
            }
        }
        Ok(())
    }
}

#[test]
fn the_driver_puts_the_framebuffer_into_the_panels_memory() {
    let mut fb = Framebuffer::default();
    render(&display_lines(&sample(-800, TradingState::Manual)), &mut fb);
    let mut oled = Ssd1306::new(Panel::new(0x3C), 0x3C);
    oled.init().unwrap();
    oled.flush(&fb).unwrap();
    let panel = oled.release();
    assert!(panel.on && panel.charge_pump);
    assert_eq!(&panel.ram[..], fb.bytes());
    // One command write for the window, then 1024 bytes in 16-byte writes.
    assert_eq!(panel.writes, 1 + 1 + 1024 / 16);
    // A second frame overwrites the first completely.
    let mut oled = Ssd1306::new(panel, 0x3C);
    render(&display_lines(&sample(300, TradingState::Offline)), &mut fb);
    oled.flush(&fb).unwrap();
    oled.off().unwrap();
    let panel = oled.release();
    assert_eq!(&panel.ram[..], fb.bytes());
    assert!(!panel.on);
}

#[test]
fn a_missing_panel_is_an_error() {
    let mut oled = Ssd1306::new(Panel::new(0x3C), 0x3D);
    assert!(oled.init().is_err());
    let mut panel = Panel::new(0x3C);
    panel.fail = true;
    let mut oled = Ssd1306::new(panel, 0x3C);
    assert!(oled.flush(&Framebuffer::default()).is_err());
}
