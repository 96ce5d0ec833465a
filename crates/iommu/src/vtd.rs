//! Intel VT-d (placeholder while the parsers land).
