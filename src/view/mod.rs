//! How results are shown: plots (PNG + SVG), the HTML page, and `figures`, the one place where
//! an analysis result becomes a figure or a terminal table. Runs no model and computes no
//! analysis; must not import `report`.

pub mod figures;
pub mod html;
pub mod latents_page;
pub mod plot;
pub mod tables;
