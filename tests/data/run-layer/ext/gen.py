import pathlib
out = pathlib.Path("/opt/gen")
out.mkdir(parents=True, exist_ok=True)
(out / "squares.py").write_text("SQUARES = %r\n" % [i * i for i in range(10)])
