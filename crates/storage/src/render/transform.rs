//! What a transformation asks for and how it is done: the options as Storage validates them,
//! the geometry imgproxy (behind Supabase Storage) gives each resize mode, and the pipeline
//! (header check, decode, orient, resize, encode). Synchronous and CPU-bound: the HTTP side
//! runs [`render`] on a blocking thread under a semaphore.
use std::io::Cursor;

use fast_image_resize as fr;
use image::{DynamicImage, ImageDecoder, ImageFormat};

/// How the image is fitted into `width` × `height` (Storage's names; imgproxy's in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// Keep the aspect ratio, fill the box, crop what projects, centred (`fill`). The default.
    Cover,
    /// Keep the aspect ratio, fit inside the box (`fit`).
    Contain,
    /// Stretch to the box (`force`).
    Fill,
}

impl Resize {
    fn parse(v: &str) -> Option<Self> {
        match v {
            "cover" => Some(Resize::Cover),
            "contain" => Some(Resize::Contain),
            "fill" => Some(Resize::Fill),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Resize::Cover => "cover",
            Resize::Contain => "contain",
            Resize::Fill => "fill",
        }
    }

    /// imgproxy's name, as Storage reports it in `X-Transformations`.
    fn imgproxy(self) -> &'static str {
        match self {
            Resize::Cover => "fill",
            Resize::Contain => "fit",
            Resize::Fill => "force",
        }
    }
}

/// The `format` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Not given: WebP when the client's `Accept` takes it, else the source's format.
    Auto,
    /// The source's format, whatever `Accept` says.
    Origin,
    Webp,
    Avif,
}

/// A transformation as asked for (by the query string, or carried by a signed URL's token),
/// validated as Storage's schema validates it and with the sides clamped as Storage clamps
/// them. `0` for a side means "not given".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transform {
    pub width: u32,
    pub height: u32,
    pub resize: Resize,
    pub format: Format,
    pub quality: Option<u8>,
}

/// The smallest and largest side a transformation may ask for (Storage's
/// `IMAGE_TRANSFORMATION_LIMIT_MIN_SIZE` / `_MAX_SIZE`): asked sides are clamped into it.
#[derive(Debug, Clone, Copy)]
pub struct SideLimits {
    pub min: u32,
    pub max: u32,
}

/// A refusal of Storage's schema validation: the text after `querystring/` or `body/transform/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// Storage's default quality when none is asked for.
pub const DEFAULT_QUALITY: u8 = 80;

impl Transform {
    /// Reads the five options through `get` (a query string's or a JSON object's values as
    /// text). `place` names where they came from in the refusal (`querystring`,
    /// `body/transform`), as Storage's validator does.
    pub fn parse(
        place: &str,
        limits: SideLimits,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Transform, Invalid> {
        let integer = |name: &str| -> Result<Option<i64>, Invalid> {
            match get(name) {
                None => Ok(None),
                // Storage's validator coerces an empty value to 0.
                Some(v) if v.trim().is_empty() => Ok(Some(0)),
                Some(v) => v
                    .trim()
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| Invalid(format!("{place}/{name} must be integer"))),
            }
        };
        let side = |name: &str| -> Result<u32, Invalid> {
            match integer(name)? {
                None | Some(0) => Ok(0),
                Some(n) if n < 0 => Err(Invalid(format!("{place}/{name} must be >= 0"))),
                Some(n) => Ok(u32::try_from(n)
                    .unwrap_or(u32::MAX)
                    .clamp(limits.min.max(1), limits.max.max(1))),
            }
        };
        let width = side("width")?;
        let height = side("height")?;
        let resize = match get("resize") {
            None => Resize::Cover,
            Some(v) => Resize::parse(&v).ok_or_else(|| {
                Invalid(format!(
                    "{place}/resize must be equal to one of the allowed values"
                ))
            })?,
        };
        let format = match get("format").as_deref() {
            None => Format::Auto,
            Some("origin") => Format::Origin,
            Some("webp") => Format::Webp,
            Some("avif") => Format::Avif,
            Some(_) => {
                return Err(Invalid(format!(
                    "{place}/format must be equal to one of the allowed values"
                )))
            }
        };
        let quality = match integer("quality")? {
            None => None,
            Some(q) if q < 20 => return Err(Invalid(format!("{place}/quality must be >= 20"))),
            Some(q) if q > 100 => return Err(Invalid(format!("{place}/quality must be <= 100"))),
            Some(q) => Some(q as u8),
        };
        Ok(Transform {
            width,
            height,
            resize,
            format,
            quality,
        })
    }

    /// The transformation as a signed URL's token carries it (Storage's form:
    /// `height:100,width:100,resize:cover,quality:80,format:origin`).
    pub fn to_claim(&self) -> String {
        let mut parts = Vec::new();
        if self.height > 0 {
            parts.push(format!("height:{}", self.height));
        }
        if self.width > 0 {
            parts.push(format!("width:{}", self.width));
        }
        parts.push(format!("resize:{}", self.resize.name()));
        if let Some(q) = self.quality {
            parts.push(format!("quality:{q}"));
        }
        match self.format {
            Format::Auto => {}
            Format::Origin => parts.push("format:origin".into()),
            Format::Webp => parts.push("format:webp".into()),
            Format::Avif => parts.push("format:avif".into()),
        }
        parts.join(",")
    }

    /// Reads a token's `transformations` claim ([`Self::to_claim`]'s form).
    pub fn from_claim(claim: &str, limits: SideLimits) -> Result<Transform, Invalid> {
        let pairs: Vec<(&str, &str)> = claim
            .split(',')
            .filter_map(|p| p.split_once(':'))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        Transform::parse("token", limits, |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    /// What Storage reports in `X-Transformations` (imgproxy's option segments).
    pub fn segments(&self) -> Vec<String> {
        let mut s = Vec::new();
        if self.height > 0 {
            s.push(format!("height:{}", self.height));
        }
        if self.width > 0 {
            s.push(format!("width:{}", self.width));
        }
        if self.width > 0 || self.height > 0 {
            s.push(format!("resizing_type:{}", self.resize.imgproxy()));
        }
        if let Some(q) = self.quality {
            s.push(format!("quality:{q}"));
        }
        match self.format {
            Format::Webp => s.push("format:webp".into()),
            Format::Avif => s.push("format:avif".into()),
            Format::Auto | Format::Origin => {}
        }
        s
    }
}

/// What a rendering becomes: the source's own format, or WebP / AVIF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Origin,
    Webp,
    Avif,
}

impl Target {
    /// The target of `format` for a client whose `Accept` does (or does not) take WebP.
    pub fn of(format: Format, accepts_webp: bool) -> Target {
        match format {
            Format::Origin => Target::Origin,
            Format::Webp => Target::Webp,
            Format::Avif => Target::Avif,
            Format::Auto if accepts_webp => Target::Webp,
            Format::Auto => Target::Origin,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::Origin => "origin",
            Target::Webp => "webp",
            Target::Avif => "avif",
        }
    }
}

/// Does an `Accept` header take `image/webp` (explicitly, with a non-zero q)?
pub fn accepts(accept: &str, mime: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let ty = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        ty.eq_ignore_ascii_case(mime) && !refused
    })
}

/// Where the resize reads from (a crop of the source, in source pixels) and what it writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// `(left, top, width, height)` of the source; `None`: all of it.
    pub crop: Option<(f64, f64, f64, f64)>,
    pub width: u32,
    pub height: u32,
}

fn px(v: f64) -> u32 {
    (v.round() as u32).max(1)
}

/// imgproxy's geometry without enlargement (its default, and Supabase's): never larger than
/// the source. One side given keeps the aspect ratio whatever the mode; `cover` scales to
/// fill the box and crops the centre, `contain` scales to fit inside it, `fill` stretches to
/// it (scaled down as a whole when the box is larger than the source on either side).
pub fn plan(src_w: u32, src_h: u32, w: u32, h: u32, mode: Resize) -> Plan {
    let (sw, sh) = (src_w as f64, src_h as f64);
    let whole = |s: f64| {
        let s = s.min(1.0);
        Plan {
            crop: None,
            width: px(sw * s),
            height: px(sh * s),
        }
    };
    match (w, h) {
        (0, 0) => Plan {
            crop: None,
            width: src_w,
            height: src_h,
        },
        (w, 0) => whole(w as f64 / sw),
        (0, h) => whole(h as f64 / sh),
        (w, h) => {
            let (fx, fy) = (w as f64 / sw, h as f64 / sh);
            match mode {
                Resize::Contain => whole(fx.min(fy)),
                Resize::Cover => {
                    let s = fx.max(fy).min(1.0);
                    let out_w = w.min(px(sw * s));
                    let out_h = h.min(px(sh * s));
                    let (cw, ch) = ((out_w as f64 / s).min(sw), (out_h as f64 / s).min(sh));
                    let crop = ((sw - cw) / 2.0, (sh - ch) / 2.0, cw, ch);
                    Plan {
                        crop: (cw < sw || ch < sh).then_some(crop),
                        width: out_w,
                        height: out_h,
                    }
                }
                Resize::Fill => {
                    let k = fx.max(fy);
                    let (fx, fy) = if k > 1.0 { (fx / k, fy / k) } else { (fx, fy) };
                    Plan {
                        crop: None,
                        width: px(sw * fx),
                        height: px(sh * fy),
                    }
                }
            }
        }
    }
}

/// The source limits (imgproxy's `IMGPROXY_MAX_SRC_FILE_SIZE` and
/// `IMGPROXY_MAX_SRC_RESOLUTION`; Supabase's documented 25 MB and 50 megapixels).
#[derive(Debug, Clone, Copy)]
pub struct SourceLimits {
    pub max_bytes: u64,
    pub max_pixels: u64,
}

/// Why a source could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// More bytes than [`SourceLimits::max_bytes`].
    FileTooLarge,
    /// More pixels (by its header) than [`SourceLimits::max_pixels`].
    ResolutionTooLarge,
    /// Not an image of a format that can be read, or a broken one.
    Unsupported(String),
    /// The AVIF encoder is not in this build.
    AvifUnavailable,
    Internal(String),
}

/// A rendered image.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
}

/// The formats read as sources (what the `image` crate decodes in this build).
fn readable(f: ImageFormat) -> bool {
    matches!(
        f,
        ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::WebP
            | ImageFormat::Gif
            | ImageFormat::Bmp
            | ImageFormat::Ico
            | ImageFormat::Tiff
    )
}

/// The largest side libwebp encodes.
const WEBP_MAX_SIDE: u32 = 16383;

/// Decodes `src` (after checking its size and, from its header alone, its pixel count),
/// applies its EXIF orientation, resizes it by `t`, and encodes it for `target`.
pub fn render(
    src: &[u8],
    t: &Transform,
    target: Target,
    limits: &SourceLimits,
) -> Result<Rendered, RenderError> {
    if src.len() as u64 > limits.max_bytes {
        return Err(RenderError::FileTooLarge);
    }
    let unsupported = |e: &dyn std::fmt::Display| RenderError::Unsupported(e.to_string());
    let mut reader = image::ImageReader::new(Cursor::new(src))
        .with_guessed_format()
        .map_err(|e| unsupported(&e))?;
    let source_format = reader
        .format()
        .filter(|f| readable(*f))
        .ok_or_else(|| RenderError::Unsupported("not an image format that can be read".into()))?;
    // The decoder's own allocations are capped too (a header can lie about what follows);
    // 8 bytes a pixel covers 16-bit RGBA.
    let mut decode_limits = image::Limits::default();
    decode_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8) + (64 << 20));
    reader.limits(decode_limits);
    // Only the header is read here: the pixel count is judged before any pixel is decoded.
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        // A decoder that sizes its buffers from the header may refuse it here already.
        image::ImageError::Limits(_) => RenderError::ResolutionTooLarge,
        other => unsupported(&other),
    })?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(RenderError::Unsupported("the image has no pixels".into()));
    }
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(RenderError::ResolutionTooLarge);
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        image::ImageError::Limits(_) => RenderError::ResolutionTooLarge,
        other => unsupported(&other),
    })?;
    img.apply_orientation(orientation);
    let alpha = img.color().has_alpha();
    let (sw, sh) = (img.width(), img.height());
    let (pixels, pixel_type) = if alpha {
        (img.into_rgba8().into_raw(), fr::PixelType::U8x4)
    } else {
        (img.into_rgb8().into_raw(), fr::PixelType::U8x3)
    };
    let p = plan(sw, sh, t.width, t.height, t.resize);
    let (pixels, out_w, out_h) = if p.crop.is_none() && (p.width, p.height) == (sw, sh) {
        (pixels, sw, sh)
    } else {
        let internal = |e: &dyn std::fmt::Display| RenderError::Internal(e.to_string());
        let src_image =
            fr::images::Image::from_vec_u8(sw, sh, pixels, pixel_type).map_err(|e| internal(&e))?;
        let mut dst = fr::images::Image::new(p.width, p.height, pixel_type);
        let mut options = fr::ResizeOptions::new()
            .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3));
        if let Some((left, top, cw, ch)) = p.crop {
            options = options.crop(left, top, cw, ch);
        }
        fr::Resizer::new()
            .resize(&src_image, &mut dst, &options)
            .map_err(|e| internal(&e))?;
        (dst.into_vec(), p.width, p.height)
    };
    let quality = t.quality.unwrap_or(DEFAULT_QUALITY);
    let fits_webp = out_w <= WEBP_MAX_SIDE && out_h <= WEBP_MAX_SIDE;
    let out_format = match target {
        Target::Webp if fits_webp => ImageFormat::WebP,
        Target::Avif => ImageFormat::Avif,
        // The source's format; a format this build cannot write as PNG.
        _ => match source_format {
            ImageFormat::WebP if fits_webp => ImageFormat::WebP,
            ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::Bmp | ImageFormat::Tiff => {
                source_format
            }
            _ => ImageFormat::Png,
        },
    };
    let bytes = encode(&pixels, out_w, out_h, alpha, out_format, quality)?;
    Ok(Rendered {
        bytes,
        mime: out_format.to_mime_type(),
        width: out_w,
        height: out_h,
    })
}

/// Encodes 8-bit RGB or RGBA pixels.
fn encode(
    pixels: &[u8],
    w: u32,
    h: u32,
    alpha: bool,
    format: ImageFormat,
    quality: u8,
) -> Result<Vec<u8>, RenderError> {
    use image::ImageEncoder;
    let internal = |e: &dyn std::fmt::Display| RenderError::Internal(e.to_string());
    let color = if alpha {
        image::ExtendedColorType::Rgba8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let mut out = Vec::new();
    match format {
        ImageFormat::WebP => {
            // Lossy, as imgproxy writes WebP: libwebp (the `image` crate writes lossless only).
            out = webp_lossy(pixels, w, h, alpha, f32::from(quality))
                .ok_or_else(|| RenderError::Internal("libwebp could not encode".into()))?;
        }
        ImageFormat::Jpeg => {
            let rgb;
            let (data, color) = if alpha {
                rgb = DynamicImage::ImageRgba8(
                    image::RgbaImage::from_raw(w, h, pixels.to_vec())
                        .ok_or_else(|| RenderError::Internal("pixel buffer size".into()))?,
                )
                .into_rgb8();
                (rgb.as_raw().as_slice(), image::ExtendedColorType::Rgb8)
            } else {
                (pixels, color)
            };
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
                .write_image(data, w, h, color)
                .map_err(|e| internal(&e))?;
        }
        #[cfg(feature = "avif")]
        ImageFormat::Avif => {
            // Speed 8 of 10: a thumbnail in well under a second; quality as asked.
            image::codecs::avif::AvifEncoder::new_with_speed_quality(&mut out, 8, quality)
                .write_image(pixels, w, h, color)
                .map_err(|e| internal(&e))?;
        }
        #[cfg(not(feature = "avif"))]
        ImageFormat::Avif => return Err(RenderError::AvifUnavailable),
        other => {
            let img = if alpha {
                image::RgbaImage::from_raw(w, h, pixels.to_vec()).map(DynamicImage::ImageRgba8)
            } else {
                image::RgbImage::from_raw(w, h, pixels.to_vec()).map(DynamicImage::ImageRgb8)
            }
            .ok_or_else(|| RenderError::Internal("pixel buffer size".into()))?;
            img.write_to(&mut Cursor::new(&mut out), other)
                .map_err(|e| internal(&e))?;
        }
    }
    Ok(out)
}

/// Lossy WebP through libwebp's one-call API (`WebPEncodeRGB` / `WebPEncodeRGBA`, its
/// default settings at `quality`); `None` when libwebp refuses (a side past 16383 pixels).
fn webp_lossy(pixels: &[u8], w: u32, h: u32, alpha: bool, quality: f32) -> Option<Vec<u8>> {
    let bpp: usize = if alpha { 4 } else { 3 };
    let (wi, hi) = (i32::try_from(w).ok()?, i32::try_from(h).ok()?);
    let stride = i32::try_from(w as usize * bpp).ok()?;
    if pixels.len() < w as usize * h as usize * bpp {
        return None;
    }
    let mut output: *mut u8 = std::ptr::null_mut();
    // SAFETY: `pixels` holds `h` rows of `stride` bytes (checked above) and outlives the call;
    // libwebp writes a buffer it allocated to `output`, or leaves it null and returns 0.
    let len = unsafe {
        if alpha {
            libwebp_sys::WebPEncodeRGBA(pixels.as_ptr(), wi, hi, stride, quality, &mut output)
        } else {
            libwebp_sys::WebPEncodeRGB(pixels.as_ptr(), wi, hi, stride, quality, &mut output)
        }
    };
    if output.is_null() {
        return None;
    }
    // SAFETY: libwebp returned `len` bytes at `output`; they are copied out, then the buffer
    // is released with libwebp's own `WebPFree`, once.
    unsafe {
        let bytes = (len > 0).then(|| std::slice::from_raw_parts(output, len).to_vec());
        libwebp_sys::WebPFree(output.cast());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SideLimits = SideLimits { min: 1, max: 2000 };

    fn parse(q: &[(&str, &str)]) -> Result<Transform, Invalid> {
        Transform::parse("querystring", LIMITS, |name| {
            q.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn options_are_validated_and_sides_clamped_as_storage_does() {
        let t = parse(&[("width", "5000"), ("height", "0"), ("quality", "20")]).unwrap();
        assert_eq!((t.width, t.height, t.quality), (2000, 0, Some(20)));
        assert_eq!(t.resize, Resize::Cover);
        assert_eq!(t.format, Format::Auto);
        assert_eq!(parse(&[("width", "")]).unwrap().width, 0);
        for (q, msg) in [
            (("quality", "19"), "querystring/quality must be >= 20"),
            (("quality", "101"), "querystring/quality must be <= 100"),
            (("quality", "high"), "querystring/quality must be integer"),
            (("width", "-1"), "querystring/width must be >= 0"),
            (("height", "1.5"), "querystring/height must be integer"),
            (
                ("resize", "stretch"),
                "querystring/resize must be equal to one of the allowed values",
            ),
            (
                ("format", "png"),
                "querystring/format must be equal to one of the allowed values",
            ),
        ] {
            assert_eq!(parse(&[q]).unwrap_err().0, msg, "{q:?}");
        }
    }

    #[test]
    fn a_token_claim_round_trips() {
        let t = parse(&[
            ("width", "120"),
            ("height", "80"),
            ("resize", "contain"),
            ("quality", "55"),
            ("format", "origin"),
        ])
        .unwrap();
        assert_eq!(
            t.to_claim(),
            "height:80,width:120,resize:contain,quality:55,format:origin"
        );
        assert_eq!(Transform::from_claim(&t.to_claim(), LIMITS).unwrap(), t);
        assert_eq!(
            Transform::from_claim("", LIMITS).unwrap(),
            parse(&[]).unwrap()
        );
    }

    #[test]
    fn accept_negotiates_webp() {
        assert!(accepts("image/avif,image/webp,*/*", "image/webp"));
        assert!(accepts("image/webp;q=0.8", "image/webp"));
        assert!(!accepts("image/webp;q=0", "image/webp"));
        assert!(!accepts("*/*", "image/webp"));
        assert!(!accepts("image/png", "image/webp"));
    }

    #[test]
    fn geometry_follows_imgproxy_without_enlargement() {
        let dims = |p: Plan| (p.width, p.height);
        // 400×200 source.
        assert_eq!(dims(plan(400, 200, 100, 100, Resize::Cover)), (100, 100));
        assert_eq!(
            plan(400, 200, 100, 100, Resize::Cover).crop,
            Some((100.0, 0.0, 200.0, 200.0))
        );
        assert_eq!(dims(plan(400, 200, 100, 100, Resize::Contain)), (100, 50));
        assert_eq!(dims(plan(400, 200, 100, 100, Resize::Fill)), (100, 100));
        assert_eq!(dims(plan(400, 200, 100, 0, Resize::Cover)), (100, 50));
        assert_eq!(dims(plan(400, 200, 0, 50, Resize::Fill)), (100, 50));
        // Never enlarged.
        assert_eq!(dims(plan(400, 200, 800, 0, Resize::Cover)), (400, 200));
        assert_eq!(dims(plan(400, 200, 800, 800, Resize::Cover)), (400, 200));
        assert_eq!(dims(plan(400, 200, 300, 300, Resize::Cover)), (300, 200));
        assert_eq!(
            plan(400, 200, 300, 300, Resize::Cover).crop,
            Some((50.0, 0.0, 300.0, 200.0))
        );
        assert_eq!(dims(plan(400, 200, 800, 800, Resize::Contain)), (400, 200));
        assert_eq!(dims(plan(400, 200, 800, 100, Resize::Fill)), (400, 50));
        assert_eq!(dims(plan(400, 200, 0, 0, Resize::Fill)), (400, 200));
        // Tiny results keep a pixel.
        assert_eq!(dims(plan(4000, 10, 1, 0, Resize::Cover)), (1, 1));
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, _| {
            if x < w / 4 {
                image::Rgb([0, 255, 0])
            } else {
                image::Rgb([255, 0, 0])
            }
        });
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    const SRC: SourceLimits = SourceLimits {
        max_bytes: 1 << 20,
        max_pixels: 1_000_000,
    };

    #[test]
    fn renders_resize_modes_and_formats() {
        let src = png(400, 200);
        let t = |w, h, resize| Transform {
            width: w,
            height: h,
            resize,
            format: Format::Auto,
            quality: None,
        };
        let r = render(&src, &t(100, 100, Resize::Fill), Target::Origin, &SRC).unwrap();
        assert_eq!((r.mime, r.width, r.height), ("image/png", 100, 100));
        let out = image::load_from_memory(&r.bytes).unwrap().into_rgb8();
        assert_eq!(
            out.get_pixel(2, 50).0,
            [0, 255, 0],
            "stretched: green stays left"
        );
        let r = render(&src, &t(100, 100, Resize::Cover), Target::Webp, &SRC).unwrap();
        assert_eq!(r.mime, "image/webp");
        let out = image::load_from_memory(&r.bytes).unwrap();
        assert_eq!((out.width(), out.height()), (100, 100));
        let px = out.into_rgb8().get_pixel(2, 50).0;
        assert!(px[0] > 200 && px[1] < 60, "cropped: no green left, {px:?}");
    }

    #[test]
    fn sources_are_judged_before_they_are_decoded() {
        let src = png(400, 200);
        let t = Transform {
            width: 0,
            height: 0,
            resize: Resize::Cover,
            format: Format::Auto,
            quality: None,
        };
        let small = SourceLimits {
            max_bytes: 10,
            max_pixels: 1_000_000,
        };
        assert_eq!(
            render(&src, &t, Target::Origin, &small).unwrap_err(),
            RenderError::FileTooLarge
        );
        let few = SourceLimits {
            max_bytes: 1 << 20,
            max_pixels: 400 * 200 - 1,
        };
        assert_eq!(
            render(&src, &t, Target::Origin, &few).unwrap_err(),
            RenderError::ResolutionTooLarge
        );
        assert!(matches!(
            render(b"hello, not an image", &t, Target::Origin, &SRC).unwrap_err(),
            RenderError::Unsupported(_)
        ));
        let mut broken = src.clone();
        broken.truncate(60);
        assert!(matches!(
            render(&broken, &t, Target::Origin, &SRC).unwrap_err(),
            RenderError::Unsupported(_)
        ));
    }
}
