//! From a guest's text to the features the understanding step reads: normalised words,
//! their stems in the message's language, stem pairs, joined pairs and character n-grams.
//!
//! Owns the one normalisation every part of understanding agrees on (lower case, accents
//! and umlauts folded, `ß` → `ss`, anything that is not a letter or digit a word break), so
//! "Wi-Fi", "wifi" and "WIFI" are one word, "arrivée" and "arrivee" too, and a phrase in a
//! topic file matches the message whatever the guest's keyboard. Must not: know about topics
//! or acts (those read the [`Text`] this builds).

use std::collections::BTreeSet;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_normalization::UnicodeNormalization;

/// The languages understanding has stemmers and cues for (ISO 639-1).
pub const LANGUAGES: [&str; 7] = ["en", "de", "fr", "es", "pt", "it", "nl"];

/// Longest text read, in characters: a guest message longer than this is read up to here
/// (keeps the step's cost bounded whatever arrives).
pub const MAX_CHARS: usize = 4_000;

/// Whether `lang` is one of [`LANGUAGES`].
pub fn is_supported(lang: &str) -> bool {
    LANGUAGES.contains(&lang)
}

/// A message read once: its words and their stems, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// Normalised words ("wi", "fi" for "Wi-Fi").
    pub words: Vec<String>,
    /// The stem of each word in the message's language (the word itself when the language
    /// has no stemmer here).
    pub stems: Vec<String>,
    /// Indices into `words` of the words that begin a clause (the first word, and the
    /// first after `.`, `!`, `?`, `,`, `;`, `:` or a line break).
    pub clause_starts: Vec<usize>,
    /// The text had a question mark (any script's).
    pub question_mark: bool,
}

impl Text {
    /// Reads `raw` as written in `lang` (`None`: no stemming).
    pub fn read(raw: &str, lang: Option<&str>) -> Text {
        let bounded: String = raw.chars().take(MAX_CHARS).collect();
        let question_mark = bounded.contains(['?', '¿', '？']);
        let (words, clause_starts) = words_and_clauses(&bounded);
        let stemmer = lang.and_then(stemmer);
        let stems = words
            .iter()
            .map(|w| match &stemmer {
                Some(s) => s.stem(w).into_owned(),
                None => w.clone(),
            })
            .collect();
        Text {
            words,
            stems,
            clause_starts,
            question_mark,
        }
    }

    /// The sparse features of this text (sorted, deduplicated): `s:` stems of the words
    /// that are not function words, `b:` pairs of stems with at least one such word, `j:`
    /// two words joined ("check in" → "checkin"). Function words ("the", "wir", "pour")
    /// carry no topic and let a small training set learn its writers' habits instead.
    pub fn features(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let content: Vec<bool> = self.words.iter().map(|w| !is_function_word(w)).collect();
        for (i, stem) in self.stems.iter().enumerate() {
            if content[i] {
                out.insert(format!("s:{stem}"));
            }
        }
        for i in 1..self.stems.len() {
            if content[i - 1] || content[i] {
                out.insert(format!("b:{} {}", self.stems[i - 1], self.stems[i]));
                out.insert(format!("j:{}{}", self.words[i - 1], self.words[i]));
            }
        }
        out
    }

    /// Whether the word sequence `phrase` (already normalised words) occurs in the text, as
    /// words or as stems (`stemmed` is the phrase stemmed in the text's language). A
    /// one-word phrase matches by stem only when the stem keeps four letters: short stems
    /// collide ("morada" and "mora" are both "mor").
    pub fn has_phrase(&self, phrase: &[String], stemmed: &[String]) -> bool {
        let by_stem = stemmed.len() > 1 || stemmed.first().is_some_and(|s| s.chars().count() >= 4);
        contains_seq(&self.words, phrase)
            || (by_stem && contains_seq(&self.stems, stemmed))
            || joined_match(&self.words, phrase)
    }
}

/// The normalised words of `text`: lower case, accents folded, split at anything that is
/// not a letter or a digit.
pub fn words(text: &str) -> Vec<String> {
    fold(text)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The sentences of `text` (split after `?`, `!`, `.` and at line breaks), trimmed,
/// those without a letter left out.
pub fn sentences(text: &str) -> Vec<&str> {
    let bounded = match text.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => &text[..at],
        None => text,
    };
    bounded
        .split_inclusive(['?', '!', '.', '\n', '？'])
        .map(str::trim)
        .filter(|s| s.chars().any(char::is_alphabetic))
        .collect()
}

/// [`words`], and the indices of the words that begin a clause.
fn words_and_clauses(text: &str) -> (Vec<String>, Vec<usize>) {
    let mut all = Vec::new();
    let mut starts = Vec::new();
    for clause in fold(text).split(['.', '!', '?', ',', ';', ':', '\n', '¿', '¡']) {
        let before = all.len();
        all.extend(
            clause
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_owned),
        );
        if all.len() > before {
            starts.push(before);
        }
    }
    (all, starts)
}

/// Lower case without accents: NFKD, combining marks dropped, `ß` → `ss`, `æ` → `ae`,
/// `œ` → `oe`, `ø` → `o`.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.nfkd() {
        if unicode_normalization::char::is_combining_mark(c) {
            continue;
        }
        match c {
            'ß' => out.push_str("ss"),
            'æ' | 'Æ' => out.push_str("ae"),
            'œ' | 'Œ' => out.push_str("oe"),
            'ø' | 'Ø' => out.push('o'),
            _ => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// The Snowball stemmer of `lang`, if it is one of [`LANGUAGES`].
pub fn stemmer(lang: &str) -> Option<Stemmer> {
    let algorithm = match lang {
        "en" => Algorithm::English,
        "de" => Algorithm::German,
        "fr" => Algorithm::French,
        "es" => Algorithm::Spanish,
        "pt" => Algorithm::Portuguese,
        "it" => Algorithm::Italian,
        "nl" => Algorithm::Dutch,
        _ => return None,
    };
    Some(Stemmer::create(algorithm))
}

/// A phrase as words and as stems in `lang`.
pub fn phrase_forms(phrase: &str, lang: Option<&str>) -> (Vec<String>, Vec<String>) {
    let text = Text::read(phrase, lang);
    (text.words, text.stems)
}

/// Function words and greetings of the seven languages (folded), and digits: never topic
/// evidence.
pub fn is_function_word(word: &str) -> bool {
    word.len() <= 1
        || word.chars().all(|c| c.is_ascii_digit())
        || FUNCTION_WORDS.binary_search(&word).is_ok()
}

/// Sorted, folded. Pronouns, articles, prepositions, auxiliaries and fillers.
const FUNCTION_WORDS: &[&str] = &[
    "a",
    "aan",
    "abend",
    "about",
    "afternoon",
    "ai",
    "al",
    "alla",
    "alle",
    "als",
    "am",
    "an",
    "and",
    "any",
    "ao",
    "are",
    "as",
    "at",
    "au",
    "aux",
    "be",
    "bei",
    "bij",
    "boa",
    "bom",
    "bonjour",
    "bonsoir",
    "buenas",
    "buenos",
    "buonasera",
    "buongiorno",
    "but",
    "by",
    "c",
    "ce",
    "ci",
    "ciao",
    "con",
    "coucou",
    "d",
    "da",
    "dag",
    "dal",
    "dalla",
    "das",
    "dass",
    "dat",
    "de",
    "dei",
    "del",
    "della",
    "dem",
    "den",
    "der",
    "des",
    "det",
    "di",
    "dia",
    "dias",
    "die",
    "dir",
    "do",
    "dos",
    "du",
    "e",
    "een",
    "ein",
    "eine",
    "einen",
    "el",
    "em",
    "en",
    "er",
    "es",
    "est",
    "et",
    "eu",
    "evening",
    "for",
    "from",
    "gli",
    "goedemiddag",
    "goedemorgen",
    "good",
    "gruezi",
    "guten",
    "hallo",
    "hello",
    "het",
    "hey",
    "hi",
    "hier",
    "hoi",
    "hola",
    "i",
    "ich",
    "ihr",
    "il",
    "in",
    "is",
    "it",
    "ja",
    "je",
    "jij",
    "jullie",
    "l",
    "la",
    "las",
    "le",
    "les",
    "lo",
    "los",
    "m",
    "me",
    "mein",
    "mi",
    "mij",
    "mio",
    "mir",
    "mit",
    "moin",
    "morgen",
    "morning",
    "my",
    "na",
    "nao",
    "ne",
    "nel",
    "nella",
    "no",
    "noite",
    "nos",
    "nous",
    "o",
    "oder",
    "of",
    "og",
    "oi",
    "ok",
    "ola",
    "on",
    "onze",
    "or",
    "os",
    "ou",
    "our",
    "per",
    "po",
    "pour",
    "qu",
    "s",
    "salut",
    "se",
    "servus",
    "si",
    "sie",
    "sind",
    "so",
    "su",
    "sur",
    "t",
    "tag",
    "tarde",
    "tardes",
    "te",
    "the",
    "there",
    "this",
    "ti",
    "to",
    "tu",
    "u",
    "ue",
    "um",
    "un",
    "una",
    "und",
    "une",
    "uno",
    "us",
    "ve",
    "vi",
    "voi",
    "von",
    "vous",
    "we",
    "wij",
    "wir",
    "with",
    "y",
    "yo",
    "you",
    "your",
    "ze",
    "zu",
    "zur",
];

fn contains_seq(haystack: &[String], needle: &[String]) -> bool {
    !needle.is_empty()
        && haystack.len() >= needle.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A one-word phrase written as two words by the guest ("wi fi" for "wifi", "check in"
/// for "checkin"), or a two-word phrase typed as one.
fn joined_match(words: &[String], phrase: &[String]) -> bool {
    match phrase {
        [single] => words.windows(2).any(|w| {
            w[0].len() + w[1].len() == single.len() && format!("{}{}", w[0], w[1]) == *single
        }),
        [a, b] => {
            let joined = format!("{a}{b}");
            words.contains(&joined)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_variants_read_as_one_word() {
        assert_eq!(
            words("Wi-Fi WLAN-Passwort?"),
            ["wi", "fi", "wlan", "passwort"]
        );
        assert_eq!(
            words("Arrivée à l'aéroport"),
            ["arrivee", "a", "l", "aeroport"]
        );
        assert_eq!(words("Straße GRÖSSE"), ["strasse", "grosse"]);
    }

    #[test]
    fn phrases_match_as_words_stems_or_joined() {
        let text = Text::read("Could we check in earlier? The wi fi?", Some("en"));
        let (w, s) = phrase_forms("checkin", Some("en"));
        assert!(text.has_phrase(&w, &s));
        let (w, s) = phrase_forms("wifi", Some("en"));
        assert!(text.has_phrase(&w, &s));
        let (w, s) = phrase_forms("early", Some("en"));
        assert!(!text.has_phrase(&w, &s), "earlier is not early as a word");
        let (w, s) = phrase_forms("park", Some("en"));
        assert!(!Text::read("the parking", Some("en")).has_phrase(&w, &s) || s == ["park"]);
    }

    #[test]
    fn function_words_are_sorted_for_the_binary_search() {
        assert!(FUNCTION_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn features_are_sorted_and_deterministic() {
        let a = Text::read("Wo können wir parken?", Some("de")).features();
        let b = Text::read("wo KÖNNEN wir parken", Some("de")).features();
        assert_eq!(a, b);
        assert!(a.contains("s:park"));
        assert!(!a.contains("s:wir"), "function words are no features");
    }
}
