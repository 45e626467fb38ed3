//! Legacy PC devices on the port-I/O bus.

mod acpi_pm;
mod i8042;
mod serial;

pub use acpi_pm::AcpiPm;
pub use i8042::I8042;
pub use serial::{EventFdTrigger, SerialConsole};
