"""Media decoding with PyAV (one concern a module: settings, streams, timeline, video, audio): uniformly sampled RGB frames and 16 kHz mono log-mel audio.

    decode_video(path)  -> uint8 (N, H, W, 3): N frames as a player shows them: the frame on screen at N
                           times spread uniformly over the clip (by presentation time, so variable frame
                           rates too), turned and mirrored as the display matrix says (a portrait phone
                           clip comes out upright), resized to H x W. Each is decoded from its keyframe
                           (seeking), or, where a seek misses, by decoding from the start.
    decode_audio(path)  -> (float32 (S,), has_audio): mono waveform at `sample_rate` on the video's
                           timeline (audio that starts late begins with silence), padded or cropped
                           to `audio_seconds`. A file with no audio track gives silence and
                           has_audio=False (a video-only clip is legal input; the flag lets callers
                           mask the modality or reject the clip, as the caller decides).
    inspect_video(path) -> VideoFacts: size as shown, whether the first and last frames decode, and
                           whether the stream stops short of its declared duration (validation's probe).
    log_mel(waveform)   -> float32 (n_mels, frames): log(mel power + 1e-6), computed with torch
    decode_clip(...)    -> Clip: the three above for one record (or frames and the waveform itself); a record
                           without video or without audio gets zeros there, flagged has_video / has_audio
    decode_windows(...) -> WindowedClip: the same per window of a long clip (Windowing: length and stride)

Every failure is a MediaError (or MediaLimitError) naming the file and the problem, raised before
a decoder is ever handed something it could choke on: missing or empty files, files over the size
limit, containers that do not open (truncated, not media), missing streams, resolution and duration
limits, and clips that stop far short of their declared duration.

Cover art (a stream with the attached_pic disposition, as in an mp3) is not video: such a file is
audio-only. Times come from a pass over the video's packets, which needs no index, so MPEG-TS,
fragmented mp4 and webm without a duration are timed, sampled and checked like an indexed mp4.
"""

from __future__ import annotations

from pathlib import Path

from model.media.audio import audio_track, decode_audio, fit_length, log_mel, mel_filterbank
from model.media.settings import Clip, DecodeConfig, MediaLimits
from model.media.streams import (Orientation, check_file, is_attached_picture, open_container, orientation_of,
                                 stream_kinds, uniform_indices, video_streams)
from model.media.timeline import Timeline, read_timeline
from model.media.video import VideoFacts, decode_video, decode_video_spans, inspect_video
from model.media.windows import AUDIO_INPUTS, Windowing, WindowedClip, decode_windows

__all__ = ["AUDIO_INPUTS", "Clip", "DecodeConfig", "MediaLimits", "Orientation", "Timeline", "VideoFacts",
           "WindowedClip", "Windowing", "audio_track", "check_file", "decode_audio", "decode_clip", "decode_video",
           "decode_video_spans", "decode_windows", "fit_length", "inspect_video",
           "is_attached_picture", "log_mel", "mel_filterbank", "orientation_of", "probe", "read_timeline",
           "stream_kinds", "uniform_indices", "video_streams"]


def probe(path: str | Path, limits: MediaLimits = MediaLimits()) -> dict:
    """Stream facts of a file without decoding it: duration, fps, resolution (as stored: inspect_video gives
    it as shown), sample rate, channels. Cover art is listed as "attached picture", not as video."""
    path = check_file(path, limits)
    with open_container(path) as container:
        info: dict = {"bytes": path.stat().st_size, "streams": stream_kinds(container)}
        info["duration"] = container.duration / 1_000_000 if container.duration is not None else None
        if video_streams(container):
            v = video_streams(container)[0]
            info.update(width=v.codec_context.width, height=v.codec_context.height,
                        fps=float(v.average_rate) if v.average_rate else None, video_codec=v.codec_context.name)
        if container.streams.audio:
            a = container.streams.audio[0]
            info.update(sample_rate=a.codec_context.sample_rate, channels=a.codec_context.channels,
                        audio_codec=a.codec_context.name)
    return info


def decode_clip(video: str | Path | None, audio: str | Path | None, config: DecodeConfig = DecodeConfig(),
                limits: MediaLimits = MediaLimits(), audio_input: str = "log_mel") -> Clip:
    """Frames from `video`, log-mel (or, with audio_input="waveform", the (num_samples,) waveform, for a
    backbone that computes its own features) from `audio` (often the same mp4). Either may be None for an
    item without it: zeros stand in, and has_video / has_audio say so."""
    return decode_windows(video, audio, config, limits, None, audio_input).first()
