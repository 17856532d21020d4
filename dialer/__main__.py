from dialer.entry import main

main()
