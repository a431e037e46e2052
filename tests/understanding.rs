//! The understanding step against the shipped topic files and rules: the corpus figures on
//! the held-out split, the split kept clean, determinism, learned examples, topic-file
//! checks and live reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use concierge::authoring::eval::{self, Split};
use concierge::content::topics::{load_topics, topics_dir};
use concierge::content::LiveRules;
use concierge::plan::rules::RuleEngine;
use concierge::plan::understand::{Act, ExampleKind, LabelledText, Topics};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_topics() -> Topics {
    let (topics, problems) = load_topics(&topics_dir(&root().join("rules")), Vec::new());
    assert!(problems.is_empty(), "{problems:?}");
    topics
}

/// What `make test` holds the shipped rules to on the held-out split, measured today
/// (README "Understanding", 2.7% wrong, 47% answered): at most 3.5% of messages get an
/// FAQ answer they did not ask for (at most 7% in any one language), and at least 40% of
/// the asked topics are answered. Tighten these as the topics get better; never loosen them.
const MAX_WRONG_TOTAL: f64 = 0.035;
const MAX_WRONG_PER_LANGUAGE: f64 = 0.07;
const MIN_RECALL_TOTAL: f64 = 0.4;

#[test]
fn the_shipped_rules_on_the_held_out_corpus() {
    let engine = RuleEngine::default();
    let (content, problems) =
        concierge::content::load_content(&engine, &root().join("rules"), &root().join("templates"));
    assert!(
        problems.is_empty(),
        "{:?}",
        problems.all().collect::<Vec<_>>()
    );
    let corpus = eval::read_corpus(&root().join("rules/corpus")).expect("corpus");
    let report = eval::evaluate(&engine, &content, &corpus, Split::Heldout);
    println!("{report}");
    assert_eq!(report.by_language.len(), 7, "seven languages");
    assert!(
        report.total.messages >= 600,
        "{} held-out messages",
        report.total.messages
    );
    assert!(
        report.total.wrong_rate() <= MAX_WRONG_TOTAL,
        "{}",
        report.details()
    );
    for (lang, t) in &report.by_language {
        assert!(
            t.wrong_rate() <= MAX_WRONG_PER_LANGUAGE,
            "{lang}: {:.1}% wrong",
            100.0 * t.wrong_rate()
        );
    }
    assert!(
        report.total.recall() >= MIN_RECALL_TOTAL,
        "recall {:.1}%",
        100.0 * report.total.recall()
    );
}

#[test]
fn the_corpus_is_large_enough_and_the_topic_files_never_saw_the_held_out_split() {
    let corpus = eval::read_corpus(&root().join("rules/corpus")).expect("corpus");
    assert!(corpus.len() >= 1500, "{} messages", corpus.len());
    for lang in ["en", "de", "fr", "es", "pt", "it", "nl"] {
        let n = corpus.iter().filter(|m| m.lang == lang).count();
        assert!(n >= 150, "{lang}: {n} messages");
    }
    let negatives = corpus
        .iter()
        .filter(|m| m.asks.iter().all(|a| !is_faq(a)))
        .count();
    assert!(
        2 * negatives >= corpus.len(),
        "{negatives} hard negatives of {}",
        corpus.len()
    );
    let topics = shipped_topics();
    // Per language: a bare "wifi?" may be written by guests of several languages.
    let trained: std::collections::HashSet<(Option<&str>, &str)> = topics
        .topics()
        .iter()
        .flat_map(|t| {
            t.texts
                .iter()
                .map(|x| (x.language.as_deref(), x.text.as_str()))
        })
        .collect();
    for m in corpus
        .iter()
        .filter(|m| m.split.as_deref() == Some("heldout"))
    {
        let key = (Some(m.lang.as_str()), m.text.as_str());
        assert!(
            !trained.contains(&key),
            "held-out {} is in a topic file",
            m.id
        );
    }
}

fn is_faq(topic: &str) -> bool {
    [
        "wifi",
        "checkin",
        "early_checkin",
        "checkout",
        "parking",
        "directions",
    ]
    .contains(&topic)
}

#[test]
fn the_issues_examples_are_read_as_people_read_them() {
    let topics = shipped_topics();
    let read = |text: &str, lang: &str| topics.understand(text, Some(lang));
    assert!(read("What's the wifi password?", "en").asks("wifi"));
    let thanks = read("Thanks, the wifi works great!", "en");
    assert_eq!(thanks.act, Act::Thanks);
    assert!(!thanks.asks("wifi"));
    let problem = read("the wifi keeps dropping, can you reset the router?", "en");
    assert_eq!(problem.act, Act::Problem);
    assert!(!problem.asks("wifi"));
    assert!(!read("We loved Central Park", "en").asks("parking"));
    assert!(!read("Our car broke down, we'll be two hours late", "en").asks("parking"));
    assert!(!read(
        "We will leave the keys on the table, thanks for everything",
        "en"
    )
    .asks("checkout"));
    assert_eq!(read("URGENT we are locked out", "en").act, Act::Urgent);
    assert_eq!(read("das WLAN ist kaputt", "de").act, Act::Problem);
    assert_eq!(read("le wifi ne marche pas", "fr").act, Act::Problem);
}

#[test]
fn the_same_examples_in_another_order_give_the_same_decisions() {
    let topics = shipped_topics();
    let mut reversed: Vec<_> = topics.topics().to_vec();
    reversed.reverse();
    for t in &mut reversed {
        t.texts.reverse();
    }
    let again = Topics::new(reversed, Vec::new());
    assert_eq!(topics.version(), again.version());
    for text in [
        "What's the wifi password?",
        "Wo können wir parken?",
        "A che ora possiamo entrare?",
        "ok",
    ] {
        assert_eq!(
            topics.understand(text, None),
            again.understand(text, None),
            "{text}"
        );
    }
}

#[test]
fn learned_examples_raise_the_confidence_of_their_phrasing_and_removing_them_restores_it() {
    let topics = shipped_topics();
    let phrasing = "any chance of the gadget code for the telly box";
    let before = topics.understand(phrasing, Some("en")).confidence("wifi");
    let learned: Vec<LabelledText> = [
        phrasing,
        "gadget code for the telly box please",
        "what is the gadget code",
    ]
    .iter()
    .map(|t| LabelledText {
        topic: "wifi".into(),
        kind: ExampleKind::Example,
        language: Some("en".into()),
        text: t.to_string(),
    })
    .collect();
    let taught = topics.with_learned(learned.clone());
    let after = taught
        .understand("gadget code for the telly box?", Some("en"))
        .confidence("wifi");
    assert!(after > before, "{before} -> {after}");
    let mut shuffled = learned;
    shuffled.reverse();
    assert_eq!(taught.version(), topics.with_learned(shuffled).version());
    let forgotten = taught.with_learned(Vec::new());
    assert_eq!(
        forgotten
            .understand(phrasing, Some("en"))
            .confidence("wifi"),
        before
    );
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

const PETS: &str = "topic = \"pets\"\nkind = \"person\"\n[phrases]\nany = [\"dog\"]\n[examples]\nen = [\"can we bring our dog?\"]\n";

#[test]
fn rules_check_names_the_file_and_line_of_a_bad_topic_set() {
    let tmp = tempfile::tempdir().expect("tmp");
    let topics = tmp.path().join("topics");
    std::fs::create_dir_all(&topics).expect("mkdir");
    write(&topics, "pets.toml", PETS);
    write(&topics, "pets2.toml", PETS);
    write(
        &topics,
        "bad.toml",
        &PETS.replace("pets", "kids").replace("en = [", "xx = ["),
    );
    let (_, problems) = load_topics(&topics, Vec::new());
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter()
            .any(|p| p.contains("bad.toml:6: unknown language \"xx\"")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|p| p.contains("already defined")),
        "{text:?}"
    );
}

#[test]
fn an_edited_topic_file_is_read_live_and_a_broken_one_keeps_the_last_good_version() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rules = tmp.path().join("rules");
    let topics = rules.join("topics");
    std::fs::create_dir_all(&topics).expect("mkdir");
    std::fs::create_dir_all(tmp.path().join("templates")).expect("mkdir");
    write(&topics, "pets.toml", PETS);
    let engine = Arc::new(RuleEngine::default());
    let (live, _) = LiveRules::load(&rules, tmp.path().join("templates"), engine);
    let hamster = "can we bring our hamster?";
    let before = live
        .current()
        .topics
        .understand(hamster, Some("en"))
        .confidence("pets");
    write(
        &topics,
        "pets.toml",
        &PETS.replace("[\"dog\"]", "[\"dog\", \"hamster\"]"),
    );
    let report = live.reload_now();
    assert_eq!(report.accepted.len(), 1, "{report:?}");
    let after = live
        .current()
        .topics
        .understand(hamster, Some("en"))
        .confidence("pets");
    assert!(after > before, "{before} -> {after}");
    write(&topics, "pets.toml", "topic = \n");
    let report = live.reload_now();
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(
        live.current()
            .topics
            .understand(hamster, Some("en"))
            .confidence("pets"),
        after
    );
}
