"""The supervisor's line splitter: complete lines out, CRLF trimmed, long tails bounded."""

from dream.supervisor.output import LineSplitter


def test_lines_across_chunks_and_crlf() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"a\nb") == [b"a"]
    assert splitter.feed(b"c\r\nd\n") == [b"bc", b"d"]
    assert splitter.feed(b"tail") == []
    assert splitter.close() == [b"tail"] and splitter.close() == []


def test_a_line_without_newline_is_let_out_at_the_limit() -> None:
    splitter = LineSplitter()
    chunk = b"x" * (LineSplitter.MAX_LINE // 4)
    out = [line for _ in range(4) for line in splitter.feed(chunk)]
    assert out == [chunk * 4]  # one line at the limit, not held forever
    assert splitter.feed(b"y\n") == [b"y"]
