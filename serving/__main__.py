"""`python -m serving`: the HTTP service. The application is assembled where the arrows allow it,
in ``cluster.serve`` (the wiring layer binds the reward models to serving's generator), so this
entry point only hands over to it; serving's own modules import no other role."""

from cluster.serve import main

if __name__ == "__main__":
    main()
