from services.export.service import main

main()
