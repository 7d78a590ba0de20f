//! The index file: layout, builder, and memory-mapped reader.

mod build;
mod format;
mod reader;

pub use build::{
    BreachFileEntry, BuildOptions, BuildReport, InputSpec, ProgressMode, assign_inputs,
    build_index, choose_bucket_bits, cleanup_temporaries, default_memory_limit, load_breaches,
    parse_size, size_histogram,
};
pub use format::{BreachMeta, DirEntry, Header, MAGIC, VERSION};
pub use reader::Index;
