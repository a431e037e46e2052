//! The guest's language: lower-case ISO 639-1 codes (`"de"`, `"pt"`), detected offline from
//! message text with `whatlang`, or taken from the booking when Channex gives one.
//!
//! Owns [`detect`] (text → language, only when the detector is confident and the text is
//! long enough), [`normalise`] (a language as some outside source spelt it → ISO 639-1) and
//! [`resolve_language`]: the one rule for what `thread.language` / `message.language` are
//! (the booking's language when known, else the detected one, else the previous value, so
//! short texts like "ok" or "thanks!" keep what the thread had).
//! Must not: do I/O, log, or keep state: the caller (the poller) remembers the thread's
//! previous language in its snapshot.

use std::sync::OnceLock;

use whatlang::{Detector, Lang};

/// Texts with fewer letters than this are not detected (too little signal: "ok",
/// "thanks!", "Danke"): the previous language stays.
pub const MIN_LETTERS: usize = 12;

/// The detector's confidence (0..1) below which a detection is not taken. whatlang's own
/// `is_reliable` (0.9) refuses most one-line guest questions ("Hallo! Wie lautet das
/// WLAN-Passwort?" scores 0.75); with the allow-list below, wrong guesses on short English
/// or nonsense texts measured under 0.2.
pub const MIN_CONFIDENCE: f64 = 0.25;

/// The languages the detector chooses among: those hosts on Booking.com and Airbnb meet
/// most. A short text is then not mistaken for Shona or Esperanto; a guest writing another
/// language keeps the thread's previous language (or the default template).
const DETECTABLE: [Lang; 32] = [
    Lang::Eng,
    Lang::Deu,
    Lang::Fra,
    Lang::Spa,
    Lang::Por,
    Lang::Ita,
    Lang::Nld,
    Lang::Pol,
    Lang::Rus,
    Lang::Ukr,
    Lang::Ces,
    Lang::Slk,
    Lang::Swe,
    Lang::Dan,
    Lang::Nob,
    Lang::Fin,
    Lang::Tur,
    Lang::Ell,
    Lang::Heb,
    Lang::Ara,
    Lang::Jpn,
    Lang::Kor,
    Lang::Cmn,
    Lang::Hun,
    Lang::Ron,
    Lang::Hrv,
    Lang::Cat,
    Lang::Bul,
    Lang::Hin,
    Lang::Tha,
    Lang::Vie,
    Lang::Ind,
];

fn detector() -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR.get_or_init(|| Detector::with_allowlist(DETECTABLE.to_vec()))
}

/// Only this many characters of a message are looked at: the language of a long message is
/// clear from its start, and detection time stays bounded.
pub const MAX_CHARS: usize = 1000;

/// The language of `text`, when it is long enough and the detector is confident; `None`
/// otherwise (or for a language without an ISO 639-1 code). Deterministic, never panics.
pub fn detect(text: &str) -> Option<String> {
    let sample: String = text.chars().take(MAX_CHARS).collect();
    let letters = sample.chars().filter(|c| c.is_alphabetic()).count();
    if letters < MIN_LETTERS {
        return None;
    }
    let info = detector().detect(&sample)?;
    if info.confidence() < MIN_CONFIDENCE {
        return None;
    }
    iso_639_1(info.lang()).map(str::to_string)
}

/// A language code as an outside source spelt it (`"de"`, `"DE"`, `"de-AT"`, `"pt_BR"`,
/// `"deu"`) as lower-case ISO 639-1; `None` when it is not one we can read.
pub fn normalise(code: &str) -> Option<String> {
    let primary = code
        .trim()
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !primary.chars().all(|c| c.is_ascii_lowercase()) {
        return None;
    }
    match primary.len() {
        2 => Some(primary),
        3 => Lang::from_code(&primary)
            .and_then(iso_639_1)
            .map(str::to_string),
        _ => None,
    }
}

/// `thread.language` / `message.language` for a guest message `text`: the booking's
/// language when known (and readable), else the language detected in `text`, else
/// `previous` (the thread's language so far).
pub fn resolve_language(
    booking: Option<&str>,
    text: &str,
    previous: Option<&str>,
) -> Option<String> {
    booking
        .and_then(normalise)
        .or_else(|| detect(text))
        .or_else(|| previous.and_then(normalise))
}

/// ISO 639-1 of a whatlang language (those that have one).
fn iso_639_1(lang: Lang) -> Option<&'static str> {
    use Lang::*;
    Some(match lang {
        Epo => "eo",
        Eng => "en",
        Rus => "ru",
        Cmn => "zh",
        Spa => "es",
        Por => "pt",
        Ita => "it",
        Ben => "bn",
        Fra => "fr",
        Deu => "de",
        Ukr => "uk",
        Kat => "ka",
        Ara => "ar",
        Hin => "hi",
        Jpn => "ja",
        Heb => "he",
        Yid => "yi",
        Pol => "pl",
        Amh => "am",
        Jav => "jv",
        Kor => "ko",
        Nob => "nb",
        Dan => "da",
        Swe => "sv",
        Fin => "fi",
        Tur => "tr",
        Nld => "nl",
        Hun => "hu",
        Ces => "cs",
        Ell => "el",
        Bul => "bg",
        Bel => "be",
        Mar => "mr",
        Kan => "kn",
        Ron => "ro",
        Slv => "sl",
        Hrv => "hr",
        Srp => "sr",
        Mkd => "mk",
        Lit => "lt",
        Lav => "lv",
        Est => "et",
        Tam => "ta",
        Vie => "vi",
        Urd => "ur",
        Tha => "th",
        Guj => "gu",
        Uzb => "uz",
        Pan => "pa",
        Aze => "az",
        Ind => "id",
        Tel => "te",
        Pes => "fa",
        Mal => "ml",
        Ori => "or",
        Mya => "my",
        Nep => "ne",
        Sin => "si",
        Khm => "km",
        Tuk => "tk",
        Aka => "ak",
        Zul => "zu",
        Sna => "sn",
        Afr => "af",
        Lat => "la",
        Slk => "sk",
        Cat => "ca",
        Tgl => "tl",
        Hye => "hy",
        Cym => "cy",
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn guest_questions_are_detected_in_their_language() {
        let cases = [
            ("Hallo! Wie lautet das WLAN-Passwort für die Wohnung?", "de"),
            (
                "Olá! Qual é a senha do wifi do apartamento, por favor?",
                "pt",
            ),
            (
                "Hola, ¿cuál es la contraseña del wifi del apartamento?",
                "es",
            ),
            (
                "Bonjour, quel est le mot de passe du wifi de l'appartement ?",
                "fr",
            ),
            (
                "Hi there, what is the wifi password for the apartment?",
                "en",
            ),
        ];
        for (text, lang) in cases {
            assert_eq!(detect(text).as_deref(), Some(lang), "{text}");
        }
    }

    #[test]
    fn short_or_unclear_texts_are_not_detected() {
        for text in [
            "ok",
            "thanks!",
            "Danke",
            "Vielen Dank!",
            "Can we check in early?",
            "👍👍",
            "12:30?",
            "",
            "   ",
        ] {
            assert_eq!(detect(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_booking_wins_then_the_text_then_the_previous_value() {
        let german = "Hallo! Wie lautet das WLAN-Passwort für die Wohnung?";
        assert_eq!(
            resolve_language(Some("pt-BR"), german, Some("fr")).as_deref(),
            Some("pt")
        );
        assert_eq!(
            resolve_language(None, german, Some("fr")).as_deref(),
            Some("de")
        );
        assert_eq!(
            resolve_language(None, "ok", Some("de")).as_deref(),
            Some("de")
        );
        assert_eq!(resolve_language(None, "ok", None), None);
        // An unreadable booking language does not hide the detection.
        assert_eq!(
            resolve_language(Some("??"), german, None).as_deref(),
            Some("de")
        );
    }

    #[test]
    fn outside_spellings_are_normalised_to_iso_639_1() {
        assert_eq!(normalise("DE").as_deref(), Some("de"));
        assert_eq!(normalise("pt_BR").as_deref(), Some("pt"));
        assert_eq!(normalise("deu").as_deref(), Some("de"));
        assert_eq!(normalise("xyz"), None);
        assert_eq!(normalise("d1"), None);
        assert_eq!(normalise(""), None);
        assert_eq!(normalise("../x"), None);
    }

    proptest! {
        #[test]
        fn detection_never_panics_and_is_deterministic(text in "\\PC{0,300}") {
            let first = detect(&text);
            prop_assert_eq!(&first, &detect(&text));
            if let Some(code) = first {
                prop_assert!(code.len() == 2 && code.chars().all(|c| c.is_ascii_lowercase()));
            }
        }

        #[test]
        fn resolution_never_panics_and_is_iso_639_1(
            booking in proptest::option::of("\\PC{0,8}"),
            text in "\\PC{0,80}",
            previous in proptest::option::of("[a-z]{2}"),
        ) {
            let lang = resolve_language(booking.as_deref(), &text, previous.as_deref());
            if let Some(code) = lang {
                prop_assert!(code.len() == 2 && code.chars().all(|c| c.is_ascii_lowercase()));
            }
        }
    }
}
