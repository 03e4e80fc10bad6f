def add_export_options(p) -> None:
    p.add_argument("--run", required=True)


def export_command(args) -> int:
    raise NotImplementedError
