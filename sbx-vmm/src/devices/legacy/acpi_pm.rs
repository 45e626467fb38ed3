//! Hardware-reduced ACPI sleep control/status and reset registers (FADT), so that a guest's
//! `poweroff` (S5) and ACPI reset end the VM cleanly.

use std::sync::Arc;

use crate::arch::x86_64::layout::{
    ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_PORT,
    ACPI_SLEEP_ENABLE, ACPI_SLEEP_TYPE_SHIFT,
};
use crate::devices::BusDevice;
use crate::exit::{ExitSignal, VmExit};

const CONTROL: u64 = 0;
const RESET: u64 = (ACPI_RESET_PORT - ACPI_SLEEP_CONTROL_PORT) as u64;

/// The ACPI power-management registers, a 3-byte window at [`ACPI_SLEEP_CONTROL_PORT`].
#[derive(Debug)]
pub struct AcpiPm {
    exit: Arc<ExitSignal>,
}

impl AcpiPm {
    pub(crate) fn new(exit: Arc<ExitSignal>) -> Self {
        Self { exit }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Sleep status: never asleep (WAK_STS clear); control and reset read as zero.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            CONTROL if value & ACPI_SLEEP_ENABLE != 0 => {
                let sleep_type = (value >> ACPI_SLEEP_TYPE_SHIFT) & 0x7;
                if sleep_type == ACPI_S5_SLEEP_TYPE {
                    tracing::debug!("guest entered ACPI S5");
                    self.exit.request(VmExit::Poweroff);
                } else {
                    tracing::debug!(sleep_type, "unsupported ACPI sleep state ignored");
                }
            }
            RESET if value == ACPI_RESET_VALUE => {
                tracing::debug!("guest wrote the ACPI reset register");
                self.exit.request(VmExit::Reset);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_and_other_states_do_not() {
        let exit = Arc::new(ExitSignal::default());
        let mut pm = AcpiPm::new(exit.clone());
        pm.write(CONTROL, &[(3 << ACPI_SLEEP_TYPE_SHIFT) | ACPI_SLEEP_ENABLE]);
        pm.write(CONTROL, &[ACPI_S5_SLEEP_TYPE << ACPI_SLEEP_TYPE_SHIFT]);
        pm.write(CONTROL, &[]);
        assert!(exit.get().is_none());
        pm.write(CONTROL, &[0x34]);
        assert_eq!(exit.get(), Some(VmExit::Poweroff));
    }

    #[test]
    fn reset_register() {
        let exit = Arc::new(ExitSignal::default());
        let mut pm = AcpiPm::new(exit.clone());
        pm.write(RESET, &[ACPI_RESET_VALUE + 1]);
        assert!(exit.get().is_none());
        pm.write(RESET, &[ACPI_RESET_VALUE]);
        assert_eq!(exit.get(), Some(VmExit::Reset));
    }
}
