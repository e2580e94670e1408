try:
    from bench.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line loads: as quiet as afterwards
    raise SystemExit(130) from None

main()
