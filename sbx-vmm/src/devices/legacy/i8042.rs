//! A minimal i8042 keyboard controller: enough for Linux to probe it and for the guest to
//! reset the machine by pulsing the CPU reset line (command `0xfe` on port 0x64).

use std::sync::Arc;

use crate::arch::x86_64::layout::{I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_RESET_COMMAND};
use crate::devices::BusDevice;
use crate::exit::{ExitSignal, VmExit};

/// Covers ports 0x60..=0x64; the device answers 0x60 (data) and 0x64 (status/command).
#[derive(Debug)]
pub struct I8042 {
    exit: Arc<ExitSignal>,
}

impl I8042 {
    pub(crate) fn new(exit: Arc<ExitSignal>) -> Self {
        Self { exit }
    }
}

/// Offset of the command/status port within the device's window (which starts at 0x60).
const COMMAND_OFFSET: u64 = (I8042_COMMAND_PORT - I8042_DATA_PORT) as u64;

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status: output buffer empty, input buffer empty, no data. Data: nothing pending.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&I8042_RESET_COMMAND) {
            tracing::debug!("guest pulsed the i8042 reset line");
            self.exit.request(VmExit::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_ends_the_vm() {
        let exit = Arc::new(ExitSignal::default());
        let mut dev = I8042::new(exit.clone());
        dev.write(0, &[I8042_RESET_COMMAND]);
        dev.write(COMMAND_OFFSET, &[0xaa]);
        assert!(exit.get().is_none());
        dev.write(COMMAND_OFFSET, &[I8042_RESET_COMMAND]);
        assert_eq!(exit.get(), Some(VmExit::Reset));
    }
}
