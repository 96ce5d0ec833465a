//! Quercus scenario configurator: validates scenario and board TOML files on the host and
//! generates the static scenario (`scenario::Scenario`) the hypervisor is built with.
//!
//! The usual call is [`load_and_validate`] then [`generate`]. Every problem found is returned (not
//! just the first), each naming the file, the VM and the field.

#![forbid(unsafe_code)]

mod board;
pub mod cache_checks;
mod cross_checks;
mod error;
mod files;
mod generate;
mod image;
mod input;
mod load;
mod model;
mod name;
mod passthrough_checks;
mod pci;
mod shm_checks;
mod toml_doc;
mod validate;
mod virtio_checks;
mod vm_checks;
mod vuart_checks;
mod words;

pub use board::{Board, Uarts, Vendor};
pub use error::{ConfigError, ErrorKind, VmRef};
pub use files::{dry_load, resolve_path, FileModule, FileRole, FILE_MODULE_PREFIX};
pub use generate::generate;
pub use image::Detected;
pub use load::{boards_dir_for, load, load_and_validate};
pub use model::{Kernel, Passthrough, Validated, Virtio, VirtioDevice, Vm};
pub use name::MAX_NAME_LEN;
pub use pci::{Bar, BarKind, Bdf, Iommu, PciFunction};
pub use shm_checks::{Shm, ShmError};
pub use validate::{validate_str, Modules};
pub use vuart_checks::{Link, LinkError};
