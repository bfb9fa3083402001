import numpy as np
import pytest

from flowapp.audio import rms_dbfs
from tests import media


def test_prompts_exist_and_are_speech_length() -> None:
    for name in media.SPEECH_PROMPTS:
        pcm = media.asterisk_prompt(name)
        assert pcm.dtype == np.int16 and 0.5 < pcm.size / 8000 < 6.0, name


def test_missing_file_names_the_package() -> None:
    with pytest.raises(media.MissingMediaError, match="apt-get install asterisk-core-sounds-en-wav"):
        media.asterisk_prompt("no-such-prompt")


def test_moh_clip_cut() -> None:
    clip = media.moh_clip(ms=1500)
    assert clip.size == 12000 and rms_dbfs(clip) > -40


def test_librivox_transcripts() -> None:
    clips = media.librivox_clips()
    assert len(clips) == 5
    path, text = clips[1]
    assert path.name.endswith("0880.wav") and text == "he was not an ill disposed young man"


def test_pcap_alaw_decodes_to_speech_level_audio() -> None:
    pcm = media.pcap_speech_alaw()
    assert 5.0 < pcm.size / 8000 < 10.0
    assert -35 < rms_dbfs(pcm) < -10


def test_espeak_helper() -> None:
    assert media.espeak("hello").size > 2000
